//! Deterministic mutation for the bounded fuzz run: the usual byte-level moves of a
//! coverage-guided fuzzer (flips, interesting values, inserts, deletes, copies,
//! splices) plus the target's dictionary, driven by a seeded PRNG so that a seed
//! reproduces a run exactly.

use fastrand::Rng;

/// Inputs grow no larger than this.
pub const MAX_LEN: usize = 16 * 1024;

const INTERESTING: &[u8] = &[
    0, 1, 0x7f, 0x80, 0xff, b'\r', b'\n', b' ', b'\t', b';', b'%', b'/',
];
const INTERESTING_32: &[u32] = &[0, 1, 0x7f, 0x80, 0xffff, 0x7fff_ffff, 0x8000_0000, u32::MAX];

/// Apply one to four stacked mutations to `data`, taking material from `pool`
/// (other inputs) and `dict` (the target's tokens).
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>, pool: &[Vec<u8>], dict: &[&[u8]]) {
    for _ in 0..rng.usize(1..=4) {
        one(rng, data, pool, dict);
    }
    data.truncate(MAX_LEN);
}

fn one(rng: &mut Rng, data: &mut Vec<u8>, pool: &[Vec<u8>], dict: &[&[u8]]) {
    let at = |rng: &mut Rng, data: &Vec<u8>| rng.usize(..=data.len());
    match rng.u8(..11) {
        0 if !data.is_empty() => {
            let i = rng.usize(..data.len());
            data[i] ^= 1 << rng.u8(..8);
        }
        1 if !data.is_empty() => {
            let i = rng.usize(..data.len());
            data[i] = INTERESTING[rng.usize(..INTERESTING.len())];
        }
        2 => {
            let i = at(rng, data);
            data.insert(i, rng.u8(..));
        }
        3 if !data.is_empty() => {
            let i = rng.usize(..data.len());
            let n = rng.usize(1..=(data.len() - i).min(16));
            data.drain(i..i + n);
        }
        4 if !data.is_empty() => {
            // Copy a range elsewhere (repeats headers, chunks, fields).
            let i = rng.usize(..data.len());
            let n = rng.usize(1..=(data.len() - i).min(64));
            let piece = data[i..i + n].to_vec();
            let j = at(rng, data);
            data.splice(j..j, piece);
        }
        5 | 6 if !dict.is_empty() => {
            let token = dict[rng.usize(..dict.len())];
            let i = at(rng, data);
            if rng.bool() {
                data.splice(i..i, token.iter().copied());
            } else {
                let end = (i + token.len()).min(data.len());
                data.splice(i..end, token.iter().copied());
            }
        }
        7 if !pool.is_empty() => {
            // Splice: our head, another input's tail.
            let other = &pool[rng.usize(..pool.len())];
            let i = at(rng, data);
            let j = rng.usize(..=other.len());
            data.truncate(i);
            data.extend_from_slice(&other[j..]);
        }
        8 if data.len() >= 4 => {
            let i = rng.usize(..=data.len() - 4);
            let v = INTERESTING_32[rng.usize(..INTERESTING_32.len())];
            let b = if rng.bool() {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            };
            data[i..i + 4].copy_from_slice(&b);
        }
        9 => number(rng, data),
        _ => {
            if !data.is_empty() {
                let i = rng.usize(..data.len());
                data.truncate(i);
            }
        }
    }
}

/// Replace a run of ASCII digits with another number (lengths, sizes, ports).
fn number(rng: &mut Rng, data: &mut Vec<u8>) {
    let Some(start) = (0..data.len())
        .map(|_| rng.usize(..data.len()))
        .take(8)
        .find(|&i| data[i].is_ascii_hexdigit())
    else {
        return;
    };
    let end = data[start..]
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .map_or(data.len(), |n| start + n);
    let n: u128 = match rng.u8(..4) {
        0 => 0,
        1 => u128::from(rng.u64(..)),
        2 => u128::from(u64::MAX) + 1,
        _ => u128::from(rng.u16(..)),
    };
    let text = if rng.bool() {
        format!("{n}")
    } else {
        format!("{n:x}")
    };
    data.splice(start..end, text.into_bytes());
}
