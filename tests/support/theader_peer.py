"""THeader peers on the Apache `thrift` Python package (THeaderTransport and
THeaderProtocol): the reference implementation the Rust codec is tested against.

  theader_peer.py server TAG [--framed]
      Serve `string getUser(1: i64 id)` on 127.0.0.1 (port printed as `port N`).
      THeader by default (it also answers framed/unframed clients, as a stock
      THeader server does); `--framed` serves TFramedTransport + TBinaryProtocol
      only. The result is JSON: who served it, the client type the server saw,
      the info headers it received and the message sequence id. A THeader reply
      carries the headers `x-served-by: TAG` and `x-echo-tenant: <x-tenant>`.
      getUser(-1) answers a TApplicationException (INTERNAL_ERROR).

  theader_peer.py client HOST:PORT [--compact] [--zlib] [--header K=V]... [--calls N]
                         [--method NAME]
      N calls getUser(i) (or NAME(i)) over THeader (binary or compact inside), each with the
      given info headers; prints one JSON line per reply: the result, the reply's
      info headers and the sequence ids, or the exception.
"""

import json
import socket
import sys
import threading

from thrift.Thrift import TApplicationException, TMessageType, TType
from thrift.protocol.TBinaryProtocol import TBinaryProtocol
from thrift.protocol.THeaderProtocol import THeaderProtocol
from thrift.transport import TSocket, TTransport
from thrift.transport.THeaderTransport import (
    THeaderClientType,
    THeaderSubprotocolID,
    THeaderTransformID,
)

ALL_CLIENT_TYPES = [
    THeaderClientType.HEADERS,
    THeaderClientType.FRAMED_BINARY,
    THeaderClientType.UNFRAMED_BINARY,
    THeaderClientType.FRAMED_COMPACT,
    THeaderClientType.UNFRAMED_COMPACT,
]


def text(b):
    return b.decode("utf-8", "replace") if isinstance(b, bytes) else b


MISSING = object()


def read_field(prot, want_id, want_type, read, default=None):
    """Read a struct: `read(prot)` of field `want_id` if it has `want_type`,
    else `default`; every other field is skipped."""
    value = default
    prot.readStructBegin()
    while True:
        _, ftype, fid = prot.readFieldBegin()
        if ftype == TType.STOP:
            break
        if fid == want_id and ftype == want_type:
            value = read(prot)
        else:
            prot.skip(ftype)
        prot.readFieldEnd()
    prot.readStructEnd()
    return value


def read_call(prot):
    name, mtype, seqid = prot.readMessageBegin()
    ident = read_field(prot, 1, TType.I64, lambda p: p.readI64())
    prot.readMessageEnd()
    return name, mtype, seqid, ident


def write_result(prot, name, seqid, result):
    prot.writeMessageBegin(name, TMessageType.REPLY, seqid)
    prot.writeStructBegin("getUser_result")
    prot.writeFieldBegin("success", TType.STRING, 0)
    prot.writeString(result)
    prot.writeFieldEnd()
    prot.writeFieldStop()
    prot.writeStructEnd()
    prot.writeMessageEnd()
    prot.trans.flush()


def write_exception(prot, name, seqid, kind, message):
    prot.writeMessageBegin(name, TMessageType.EXCEPTION, seqid)
    TApplicationException(kind, message).write(prot)
    prot.writeMessageEnd()
    prot.trans.flush()


def serve_one(sock, tag, framed):
    trans = TSocket.TSocket()
    trans.setHandle(sock)
    if framed:
        trans = TTransport.TFramedTransport(trans)
        prot = TBinaryProtocol(trans)
    else:
        prot = THeaderProtocol(trans, ALL_CLIENT_TYPES)
    try:
        while True:
            name, _, seqid, ident = read_call(prot)
            if framed:
                client_type, headers = "framed_binary", {}
            else:
                client_type = {
                    THeaderClientType.HEADERS: "headers",
                    THeaderClientType.FRAMED_BINARY: "framed_binary",
                    THeaderClientType.UNFRAMED_BINARY: "unframed_binary",
                    THeaderClientType.FRAMED_COMPACT: "framed_compact",
                    THeaderClientType.UNFRAMED_COMPACT: "unframed_compact",
                }[prot.trans._client_type]
                headers = {text(k): text(v) for k, v in prot.get_headers().items()}
                prot.set_header(b"x-served-by", tag.encode())
                tenant = headers.get("x-tenant")
                if tenant is not None:
                    prot.set_header(b"x-echo-tenant", tenant.encode())
            if ident == -1:
                write_exception(prot, name, seqid, TApplicationException.INTERNAL_ERROR, "boom")
                continue
            result = {
                "served_by": tag,
                "client_type": client_type,
                "headers": headers,
                "seqid": seqid,
                "id": ident,
            }
            write_result(prot, name, seqid, json.dumps(result, sort_keys=True))
    except (EOFError, TTransport.TTransportException, ConnectionError, OSError):
        pass
    finally:
        sock.close()


def server(tag, framed):
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)
    print("port %d" % lsock.getsockname()[1], flush=True)
    while True:
        sock, _ = lsock.accept()
        threading.Thread(target=serve_one, args=(sock, tag, framed), daemon=True).start()


def client(addr, compact, zlib, headers, calls, method):
    host, port = addr.rsplit(":", 1)
    sock = TSocket.TSocket(host, int(port))
    sock.setTimeout(10000)
    proto_id = THeaderSubprotocolID.COMPACT if compact else THeaderSubprotocolID.BINARY
    prot = THeaderProtocol(sock, [THeaderClientType.HEADERS], default_protocol=proto_id)
    sock.open()
    for i in range(calls):
        for k, v in headers:
            prot.set_header(k.encode(), v.encode())
        if zlib:
            prot.add_transform(THeaderTransformID.ZLIB)
        seqid = 100 + i
        prot.writeMessageBegin(method, TMessageType.CALL, seqid)
        prot.writeStructBegin("getUser_args")
        prot.writeFieldBegin("id", TType.I64, 1)
        prot.writeI64(i)
        prot.writeFieldEnd()
        prot.writeFieldStop()
        prot.writeStructEnd()
        prot.writeMessageEnd()
        prot.trans.flush()
        try:
            name, mtype, rseqid = prot.readMessageBegin()
        except (EOFError, TTransport.TTransportException) as e:
            print(json.dumps({"closed": str(e)}), flush=True)
            return
        out = {
            "seqid": rseqid,
            "frame_seqid": prot.trans.sequence_id,
            "reply_headers": {text(k): text(v) for k, v in prot.get_headers().items()},
        }
        if mtype == TMessageType.EXCEPTION:
            x = TApplicationException()
            x.read(prot)
            out["exception"] = {"type": x.type, "message": x.message}
        else:
            result = read_field(
                prot, 0, TType.STRING, lambda p: json.loads(p.readString()), MISSING
            )
            if result is not MISSING:
                out["result"] = result
        prot.readMessageEnd()
        print(json.dumps(out, sort_keys=True), flush=True)
    sock.close()


def main(argv):
    if argv[0] == "server":
        server(argv[1], "--framed" in argv[2:])
        return
    headers, calls, method, i = [], 1, "getUser", 2
    while i < len(argv):
        if argv[i] == "--header":
            k, v = argv[i + 1].split("=", 1)
            headers.append((k, v))
            i += 1
        elif argv[i] == "--calls":
            calls = int(argv[i + 1])
            i += 1
        elif argv[i] == "--method":
            method = argv[i + 1]
            i += 1
        i += 1
    client(argv[1], "--compact" in argv, "--zlib" in argv, headers, calls, method)


if __name__ == "__main__":
    main(sys.argv[1:])
