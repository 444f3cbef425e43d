use std::time::{Duration, Instant};

use super::filter::Bucket;
use super::stats;
use crate::api::{Action, StreamCtx};
use crate::testing::Harness;

#[test]
fn bucket_allows_a_burst_then_refills_per_interval() {
    let b = Bucket::new(3, 2, Duration::from_millis(100));
    let t0 = Instant::now();
    assert!((0..3).all(|_| b.try_take_at(t0).is_ok()));
    let wait = b.try_take_at(t0).expect_err("empty");
    assert!(wait <= Duration::from_millis(100));
    let t1 = t0 + Duration::from_millis(150);
    assert!(b.try_take_at(t1).is_ok());
    assert!(b.try_take_at(t1).is_ok());
    assert!(b.try_take_at(t1).is_err(), "two per fill");
    // A long pause refills to max, not beyond.
    let t2 = t0 + Duration::from_secs(10);
    assert_eq!((0..10).filter(|_| b.try_take_at(t2).is_ok()).count(), 3);
}

#[test]
fn bucket_is_exact_across_threads() {
    let b = std::sync::Arc::new(Bucket::new(1000, 1, Duration::from_secs(3600)));
    let now = Instant::now();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let b = b.clone();
            std::thread::spawn(move || (0..500).filter(|_| b.try_take_at(now).is_ok()).count())
        })
        .collect();
    let total: usize = handles.into_iter().map(|h| h.join().expect("thread")).sum();
    assert_eq!(total, 1000);
}

#[test]
fn limited_requests_get_429_with_retry_after_and_are_counted() {
    let h = Harness::default();
    let f = h.build("local_rate_limit", "{ max_tokens: 2, fill_interval: 1h }");
    let (mut parts, _) = http::Request::new(()).into_parts();
    let mut cx = StreamCtx::default();
    assert!(matches!(
        f.on_request(&mut parts, &mut cx),
        Action::Continue
    ));
    assert!(matches!(
        f.on_request(&mut parts, &mut cx),
        Action::Continue
    ));
    match f.on_request(&mut parts, &mut cx) {
        Action::Respond(r) => {
            assert_eq!(r.status(), 429);
            let ra: u64 = r.headers()["retry-after"]
                .to_str()
                .expect("ascii")
                .parse()
                .expect("seconds");
            assert!((1..=3600).contains(&ra));
        }
        Action::Continue => panic!("third request must be limited"),
    }
    assert_eq!(
        h.counter(stats::TOTAL, &[("listener", "web"), ("result", "allowed")]),
        2
    );
    assert_eq!(
        h.counter(stats::TOTAL, &[("listener", "web"), ("result", "limited")]),
        1
    );
}

#[test]
fn rejects_zero_sizes() {
    let h = Harness::default();
    let errs = h
        .try_build(
            "local_rate_limit",
            "{ max_tokens: 0, tokens_per_fill: 0 }",
            false,
        )
        .expect_err("invalid");
    assert_eq!(errs.len(), 2);
    assert!(h
        .try_build("local_rate_limit", "{ max_tokns: 1 }", false)
        .is_err());
}
