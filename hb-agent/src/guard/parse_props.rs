//! Property tests of the guard's readers of attacker-chosen bytes: the plain-HTTP head,
//! chunked body and body-start readers ([`super::http`]) and the ClientHello reader
//! ([`super::tls`]).
//!
//! A sandbox chooses every byte the guard reads and how its writes fall into reads. So
//! beside "never panics", each reader must give one answer however the bytes are cut,
//! and a request the guard passes must be framed as a server's parser frames it: a
//! body whose end the guard places elsewhere than the server hides the next request
//! from the guard (request smuggling). The reference for chunked framing is httparse's
//! `parse_chunk_size` and `parse_headers`, the parser hyper's ecosystem shares; for the
//! name a ClientHello asks for, rustls's server (`rustls::server::Acceptor`): a hello
//! the guard reads as one name must be one a server reads as that name, or refuses.
//!
//! Cases per property: proptest's default (256), or `PROPTEST_CASES` for a long run:
//! `PROPTEST_CASES=200000 cargo test -p hb-agent --release --bin hb-agent -- guard::parse_props`.

use proptest::prelude::*;

use super::{
    http::{self, BodyStart, Chunks, Framing},
    tls,
};

/// Where the guard's chunked-body reader ends the body of `stream`, when its bytes
/// arrive cut at `cuts` (offsets, any order): the relay's own loop
/// (`relay::forward_chunked`) over reads — chunk lines and trailers read through
/// [`http::scan_chunks`], chunk data taken straight from the stream (as `splice` takes
/// exactly the bytes left of a chunk). `None`: refused, or the stream ended first.
fn guard_body_end(stream: &[u8], cuts: &[usize]) -> Option<usize> {
    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(stream.len())).collect();
    cuts.push(stream.len());
    cuts.sort_unstable();
    let (mut delivered, mut buf, mut state, mut body) = (0, Vec::new(), Chunks::Size, 0);
    loop {
        let (used, next) = http::scan_chunks(state, &buf).ok()?;
        body += used;
        buf.drain(..used);
        state = next;
        match state {
            Chunks::Done => return Some(body),
            Chunks::Data(left) => {
                assert!(buf.is_empty(), "scan stopped inside buffered chunk data");
                let left = usize::try_from(left).ok()?;
                if stream.len() - delivered < left {
                    return None;
                }
                delivered += left;
                body += left;
                state = Chunks::DataEnd;
                continue;
            }
            _ => {}
        }
        let next_cut = cuts.iter().copied().find(|&c| c > delivered)?;
        buf.extend_from_slice(&stream[delivered..next_cut]);
        delivered = next_cut;
    }
}

/// Where httparse ends the chunked body at the start of `stream` (size lines through
/// `parse_chunk_size`, the trailer section through `parse_headers`), if it is whole.
fn reference_body_end(stream: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let httparse::Status::Complete((line, size)) =
            httparse::parse_chunk_size(&stream[at..]).ok()?
        else {
            return None;
        };
        at += line;
        if size == 0 {
            let mut fields = [httparse::EMPTY_HEADER; 64];
            let httparse::Status::Complete((trailer, _)) =
                httparse::parse_headers(&stream[at..], &mut fields).ok()?
            else {
                return None;
            };
            return Some(at + trailer);
        }
        at = at.checked_add(usize::try_from(size).ok()?)?;
        if stream.get(at..at + 2)? != b"\r\n" {
            return None;
        }
        at += 2;
    }
}

/// A line end as a sender may write it: mostly CRLF, sometimes one servers disagree on.
fn line_end() -> impl Strategy<Value = &'static str> {
    prop_oneof![24 => Just("\r\n"), 1 => Just("\n"), 1 => Just("\r"), 1 => Just("")]
}

/// One chunk: its size line (as written, sometimes lying about the data), the data and
/// what follows the data.
fn chunk() -> impl Strategy<Value = Vec<u8>> {
    (
        0usize..24,
        prop_oneof![
            24 => Just(0i64),
            1 => Just(1i64),
            1 => Just(-1i64),
            1 => Just(0x1_0000_0000_0000i64),
        ],
        prop_oneof![
            16 => Just(""),
            4 => Just(";ext=1"),
            1 => Just(" "),
            1 => Just(";a\nb"),
            1 => Just(";x\r"),
        ],
        prop_oneof![12 => Just(0u8), 2 => Just(1u8), 2 => Just(2u8), 1 => Just(3u8)],
        line_end(),
        prop::collection::vec(
            prop_oneof![4 => any::<u8>(), 1 => Just(b'\r'), 1 => Just(b'\n')],
            0..24,
        ),
        line_end(),
    )
        .prop_map(|(len, lie, ext, form, eol, mut data, end)| {
            data.truncate(len);
            let told = i64::try_from(data.len()).unwrap_or(0).saturating_add(lie);
            let size = format!("{:x}", told.max(1));
            // Lower or upper case, leading zeros, a sign (which no server should take).
            let size = match form {
                1 => size.to_ascii_uppercase(),
                2 => format!("00{size}"),
                3 => format!("+{size}"),
                _ => size,
            };
            let mut out = format!("{size}{ext}{eol}").into_bytes();
            out.extend_from_slice(&data);
            out.extend_from_slice(end.as_bytes());
            out
        })
}

/// A whole chunked body (its chunks, the last chunk, trailer fields) and what a sender
/// puts after it: the next request, or bytes a server might read as one.
fn chunked_stream() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(chunk(), 0..5),
        prop_oneof![
            12 => Just("0"),
            2 => Just("000"),
            2 => Just("0;last"),
            1 => Just("0 "),
            1 => Just(""),
        ],
        line_end(),
        prop::collection::vec(
            prop_oneof![
                6 => Just("X-Sum: 1\r\n"),
                1 => Just("X-Bad\r\n"),
                1 => Just("GET /evil HTTP/1.1\r\n"),
                1 => Just(" folded\r\n"),
                1 => Just("X-Lf: 1\n"),
            ],
            0..3,
        ),
        line_end(),
        prop_oneof![
            Just("GET /next HTTP/1.1\r\nHost: evil.test\r\n\r\n"),
            Just("0\r\n\r\n"),
            Just(""),
        ],
    )
        .prop_map(|(chunks, last, eol, trailers, end, tail)| {
            let mut out = chunks.concat();
            out.extend_from_slice(last.as_bytes());
            out.extend_from_slice(eol.as_bytes());
            for t in trailers {
                out.extend_from_slice(t.as_bytes());
            }
            out.extend_from_slice(end.as_bytes());
            out.extend_from_slice(tail.as_bytes());
            out
        })
}

/// A request head built from parts that framing and routing hinge on, some of them
/// ambiguous on purpose.
fn request_head() -> impl Strategy<Value = Vec<u8>> {
    let method = prop_oneof![
        2 => Just("GET"),
        4 => Just("POST"),
        2 => Just("PUT"),
        1 => Just("HEAD"),
        1 => Just("DELETE"),
        2 => Just("PATCH"),
        1 => Just("OPTIONS"),
        1 => Just("get"),
    ];
    let target = prop_oneof![
        4 => Just("/"),
        2 => Just("/a?b=c"),
        2 => Just("http://allowed.test/x"),
        1 => Just("HTTP://Allowed.Test:80/"),
        1 => Just("http://evil.test/"),
        1 => Just("http://u@allowed.test/"),
        1 => Just("*"),
    ];
    let version = prop_oneof![4 => Just("HTTP/1.1"), 1 => Just("HTTP/1.0")];
    let field = prop_oneof![
        3 => Just("Host: allowed.test"),
        1 => Just("host: ALLOWED.test.:8080"),
        1 => Just("Host: evil.test"),
        1 => Just("Host: [::1]:80"),
        1 => Just("Host: allowed.test\u{a0}"),
        1 => Just("Host: allowed.test:080"),
        3 => Just("Content-Length: 5"),
        1 => Just("Content-Length: 0"),
        1 => Just("content-length: 05"),
        1 => Just("Content-Length: +5"),
        3 => Just("Transfer-Encoding: chunked"),
        1 => Just("Transfer-Encoding: gzip, chunked"),
        2 => Just("Connection: keep-alive"),
        2 => Just("Connection: Upgrade, X-Opt"),
        1 => Just("Connection: close"),
        2 => Just("Keep-Alive: timeout=5"),
        1 => Just("Upgrade: websocket"),
        1 => Just("Upgrade: h2c"),
        2 => Just("X-Any: v"),
    ];
    (
        method,
        target,
        version,
        prop::collection::vec((field, line_end()), 0..5),
        line_end(),
    )
        .prop_map(|(method, target, version, fields, end)| {
            let mut out = format!("{method} {target} {version}\r\n");
            for (f, eol) in fields {
                out.push_str(f);
                out.push_str(eol);
            }
            out.push_str(end);
            out.into_bytes()
        })
}

/// A handshake record (type 22) carrying `body`, with a length that sometimes lies.
fn record(body: &[u8], lie: i32) -> Vec<u8> {
    let told = i32::try_from(body.len()).unwrap_or(0).saturating_add(lie);
    let told = u16::try_from(told.max(0)).unwrap_or(u16::MAX).to_be_bytes();
    let mut out = vec![tls::HANDSHAKE, 3, 1, told[0], told[1]];
    out.extend_from_slice(body);
    out
}

/// The SNI extension's data: `names` (each: name type, name bytes) in a list whose
/// length is off by `lie`, and `trailing` bytes after the list.
fn sni_data(names: &[(u8, Vec<u8>)], lie: i32, trailing: &[u8]) -> Vec<u8> {
    let mut list = Vec::new();
    for (kind, name) in names {
        list.push(*kind);
        list.extend(u16::try_from(name.len()).unwrap_or(0).to_be_bytes());
        list.extend(name);
    }
    let told = i32::try_from(list.len()).unwrap_or(0).saturating_add(lie);
    let mut data = u16::try_from(told.max(0))
        .unwrap_or(u16::MAX)
        .to_be_bytes()
        .to_vec();
    data.extend(list);
    data.extend(trailing);
    data
}

/// A ClientHello record as a sandbox may write it: extensions in any order and number,
/// SNI lists of zero to three names of any type, lying lengths, then a byte or two of
/// it overwritten.
fn any_hello() -> impl Strategy<Value = Vec<u8>> {
    let name = prop_oneof![
        4 => Just(b"allowed.test".to_vec()),
        2 => Just(b"evil.test".to_vec()),
        1 => Just(b"Allowed.Test.".to_vec()),
        1 => Just(b"allowed.test\0evil.test".to_vec()),
        1 => Just(b"10.0.0.1".to_vec()),
        1 => Just(Vec::new()),
    ];
    let count =
        prop_oneof![1 => Just(0usize), 8 => Just(1usize), 1 => Just(2usize), 1 => Just(3usize)];
    let sni = (
        count.prop_flat_map(move |n| {
            prop::collection::vec(
                (prop_oneof![8 => Just(0u8), 1 => Just(1u8)], name.clone()),
                n,
            )
        }),
        prop_oneof![8 => Just(0i32), 1 => Just(-1i32), 1 => Just(2i32)],
        prop_oneof![8 => Just(Vec::new()), 1 => Just(vec![0u8, 0, 3, b'e', b'v', b'l'])],
    )
        .prop_map(|(names, lie, trailing)| (0u16, sni_data(&names, lie, &trailing)));
    let other = prop_oneof![
        Just((43u16, vec![2, 3, 4])),
        Just((51u16, vec![0, 0])),
        Just((0x0a0au16, Vec::new())),
        Just((0xfe0du16, vec![0, 1, 2])),
        prop::collection::vec(any::<u8>(), 0..8).prop_map(|d| (0x1234u16, d)),
    ];
    let snis = prop_oneof![1 => Just(0usize), 8 => Just(1usize), 1 => Just(2usize)]
        .prop_flat_map(move |n| prop::collection::vec(sni.clone(), n));
    (
        snis,
        prop::collection::vec(other, 0..3),
        prop::option::weighted(0.9, any::<prop::sample::Index>()),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        prop_oneof![8 => Just(0usize), 1 => Just(1usize), 1 => Just(2usize)],
    )
        .prop_map(|(snis, others, signatures_at, flips, flip_count)| {
            // The SNI extensions among the others, in the order drawn.
            let mut extensions = others;
            for (i, sni) in snis.into_iter().enumerate() {
                let at = (i * 7) % (extensions.len() + 1);
                extensions.insert(at, sni);
            }
            // rustls's server refuses a hello without signature_algorithms.
            if let Some(at) = signatures_at {
                let at = at.index(extensions.len() + 1);
                extensions.insert(at, (13, vec![0, 2, 8, 4]));
            }
            let mut hello = tls::tests::client_hello(&extensions);
            for (at, byte) in flips.into_iter().take(flip_count) {
                let i = at.index(hello.len());
                hello[i] = byte;
            }
            hello
        })
}

/// The name rustls's server reads in the ClientHello record(s) of `records`: `Err` when
/// it refuses them (or they are not whole).
fn rustls_name(records: &[u8]) -> Result<Option<String>, ()> {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rest = records;
    while !rest.is_empty() {
        match acceptor.read_tls(&mut rest) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => Ok(accepted.client_hello().server_name().map(str::to_owned)),
        _ => Err(()),
    }
}

proptest! {
    /// A ClientHello the guard reads as asking for one name is, to a server (rustls),
    /// a hello asking for that same name, or one it refuses: no hello names one host to
    /// the guard and another, or none, to the server.
    #[test]
    fn a_hello_names_to_a_server_the_host_it_names_to_the_guard(hello in any_hello()) {
        let Ok(Some(message)) = tls::complete_hello(&hello) else {
            return Ok(());
        };
        if let tls::Hello::Name(name) = tls::hello_name(&message) {
            let server = rustls_name(&hello);
            if let Ok(seen) = &server {
                // Case aside, the very name: a server (or an SNI router) that compares it
                // whole routes it where the guard judged it goes.
                let seen = seen.as_deref().map(str::to_ascii_lowercase);
                prop_assert_eq!(seen.as_deref(), Some(name.as_str()), "hello {:?}", hello);
            }
        }
    }
}

proptest! {
    /// However a sender's bytes fall into reads, the guard ends a chunked body at one
    /// place — the place httparse ends it — or refuses; it never passes a body that
    /// httparse frames otherwise (the next request hidden in it, or a body cut short
    /// whose rest a server reads as a request).
    #[test]
    fn a_chunked_body_ends_where_a_server_ends_it_however_it_is_cut(
        stream in chunked_stream(),
        cuts in prop::collection::vec(0usize..200, 0..6),
    ) {
        let whole = guard_body_end(&stream, &[]);
        let cut = guard_body_end(&stream, &cuts);
        if let Some(end) = cut {
            prop_assert_eq!(Some(end), reference_body_end(&stream), "cut at {:?}", cuts);
        }
        if let Some(end) = whole {
            prop_assert_eq!(Some(end), reference_body_end(&stream));
        }
        if let (Some(a), Some(b)) = (whole, cut) {
            prop_assert_eq!(a, b);
        }
    }

    /// A request head the guard passes is forwarded as `with_connection_close` writes it
    /// when it has a body: that rewrite is read exactly as the original was (method,
    /// host, framing, upgrade), and holds one `Connection` field, exactly `close`.
    #[test]
    fn a_head_marked_close_reads_as_the_head_the_guard_judged(head in request_head()) {
        let Ok(Some(judged)) = http::parse_head(&head) else {
            return Ok(());
        };
        let marked = http::with_connection_close(&head[..judged.len]);
        let again = http::parse_head(&marked);
        prop_assert!(matches!(again, Ok(Some(_))), "{:?} → {:?}", String::from_utf8_lossy(&marked), again);
        let Ok(Some(again)) = again else { unreachable!() };
        prop_assert_eq!(again.len, marked.len());
        prop_assert_eq!(&again.method, &judged.method);
        prop_assert_eq!(&again.host, &judged.host);
        prop_assert_eq!(again.port, judged.port);
        prop_assert_eq!(again.framing, judged.framing);
        prop_assert_eq!(&again.upgrade, &judged.upgrade);
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut fields);
        prop_assert!(req.parse(&marked).is_ok());
        let connection: Vec<String> = req
            .headers
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case("connection"))
            .map(|f| String::from_utf8_lossy(f.value).to_ascii_lowercase())
            .collect();
        // Exactly `close`: Python's `http.server` keeps a connection on anything else.
        prop_assert_eq!(connection, vec!["close".to_owned()]);
        prop_assert!(!req.headers.iter().any(|f| f.name.eq_ignore_ascii_case("keep-alive")));
    }

    /// The head reader gives one answer however the head is cut: every prefix of a head
    /// it reads whole is "incomplete" (never a different head, never refused), and a
    /// head it refuses is never passed on a prefix.
    #[test]
    fn a_head_is_judged_the_same_on_every_prefix(
        head in request_head(),
        body in prop::collection::vec(any::<u8>(), 0..16),
    ) {
        let mut stream = head.clone();
        stream.extend_from_slice(&body);
        let whole = http::parse_head(&stream);
        for cut in 0..stream.len() {
            let part = http::parse_head(&stream[..cut]);
            match (&whole, &part) {
                (_, Ok(None)) => {}
                (Ok(Some(w)), Ok(Some(p))) => prop_assert_eq!(w, p),
                (Err(_), Err(_)) => {}
                (w, p) => prop_assert!(false, "prefix {}: {:?}, whole: {:?}", cut, p, w),
            }
        }
        if let Ok(Some(h)) = &whole
            && h.framing == Framing::Length(0)
        {
            prop_assert!(!h.has_body());
        }
    }

    /// Deciding on the start of a body never differs from deciding on the whole body:
    /// a prefix judged "a request" or "no request" is judged so on every longer prefix.
    #[test]
    fn a_body_start_once_decided_stays_decided(
        body in prop_oneof![
            Just(b"GET /evil HTTP/1.1\r\nHost: evil.test\r\n\r\n".to_vec()),
            Just(b"\r\n\r\n  POST  /x   http/1.0\n".to_vec()),
            Just(b"{\"a\": 1}\r\nGET / HTTP/1.1\r\n".to_vec()),
            prop::collection::vec(
                prop_oneof![Just(b'G'), Just(b' '), Just(b'\r'), Just(b'\n'), Just(b'/'), any::<u8>()],
                0..40,
            ),
        ],
    ) {
        let whole = http::body_start(&body, true);
        prop_assert_ne!(whole, BodyStart::Undecided);
        for cut in 0..=body.len() {
            let part = http::body_start(&body[..cut], false);
            if part != BodyStart::Undecided {
                prop_assert_eq!(part, whole, "decided at {}", cut);
            }
        }
    }

    /// No byte string makes the readers panic.
    #[test]
    fn the_readers_take_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = http::parse_head(&bytes);
        let _ = http::parse_response_head(&bytes);
        let _ = http::with_connection_close(&bytes);
        let _ = http::body_start(&bytes, false);
        for state in [Chunks::Size, Chunks::Data(3), Chunks::DataEnd, Chunks::Trailer] {
            let _ = http::scan_chunks(state, &bytes);
        }
        let _ = tls::complete_hello(&bytes);
        let _ = tls::hello_name(&bytes);
        let _ = tls::server_hello(&bytes);
    }

    /// A ClientHello is read the same however its records are cut and however its
    /// reads fall: no prefix yields a hello other than the whole's, and a refused
    /// stream is refused on no prefix that the whole passes.
    #[test]
    fn a_client_hello_is_found_the_same_on_every_prefix(
        names in prop::collection::vec(
            prop_oneof![Just("allowed.test"), Just("evil.test"), Just("10.0.0.1"), Just("a..b")],
            0..3,
        ),
        splits in prop::collection::vec(1usize..120, 0..4),
        lies in prop::collection::vec(prop_oneof![8 => Just(0i32), 1 => Just(-1i32), 1 => Just(3i32)], 4),
        junk in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        let full = tls::tests::client_hello(&[tls::tests::sni(&names)]);
        // The handshake message, re-cut into records of the chosen sizes.
        let message = tls::complete_hello(&full).expect("test hello").expect("whole");
        let mut stream = Vec::new();
        let mut rest = message.as_slice();
        for (i, &size) in splits.iter().enumerate() {
            let take = size.min(rest.len());
            if take == 0 {
                break;
            }
            stream.extend(record(&rest[..take], lies[i % lies.len()]));
            rest = &rest[take..];
        }
        if !rest.is_empty() {
            stream.extend(record(rest, 0));
        }
        stream.extend_from_slice(&junk);
        let whole = tls::complete_hello(&stream);
        for cut in 0..stream.len() {
            match (tls::complete_hello(&stream[..cut]), &whole) {
                (Ok(None), _) => {}
                (Ok(Some(m)), Ok(Some(w))) => prop_assert_eq!(&m, w, "at {}", cut),
                (Err(()), Err(())) => {}
                (p, w) => prop_assert!(false, "prefix {}: {:?}, whole: {:?}", cut, p, w),
            }
        }
        if let Ok(Some(m)) = &whole
            && *m == message
        {
            let one_good_name =
                names.len() == 1 && (names[0] == "allowed.test" || names[0] == "evil.test");
            let read = tls::hello_name(m);
            match read {
                tls::Hello::Name(n) => prop_assert!(one_good_name && names[0] == n, "{:?} → {}", names, n),
                _ => prop_assert!(!one_good_name, "{:?} → {:?}", names, read),
            }
        }
    }
}

/// The properties above check something only where the readers pass: the generators
/// must reach passed and refused bytes alike, or a property holds vacuously.
#[test]
fn the_generators_reach_passes_and_refusals() {
    use proptest::{strategy::ValueTree as _, test_runner::TestRunner};
    let mut runner = TestRunner::deterministic();
    let mut sample =
        |s: &dyn Fn(&mut TestRunner) -> bool| (0..2000).filter(|_| s(&mut runner)).count();
    let bodies = sample(&|r| {
        let stream = chunked_stream().new_tree(r).expect("sample").current();
        guard_body_end(&stream, &[3, 11]).is_some()
    });
    let heads_with_body = sample(&|r| {
        let head = request_head().new_tree(r).expect("sample").current();
        matches!(http::parse_head(&head), Ok(Some(h)) if h.has_body())
    });
    let heads_refused = sample(&|r| {
        let head = request_head().new_tree(r).expect("sample").current();
        http::parse_head(&head).is_err()
    });
    let hellos_named = sample(&|r| {
        let hello = any_hello().new_tree(r).expect("sample").current();
        let named = matches!(
            tls::complete_hello(&hello),
            Ok(Some(m)) if matches!(tls::hello_name(&m), tls::Hello::Name(_))
        );
        named && rustls_name(&hello).is_ok_and(|n| n.is_some())
    });
    println!(
        "of 2000: chunked bodies passed {bodies}, heads with a body passed {heads_with_body}, \
         heads refused {heads_refused}, hellos named to both the guard and rustls {hellos_named}"
    );
    for (what, n) in [
        ("chunked bodies passed", bodies),
        ("chunked bodies refused", 2000 - bodies),
        ("heads with a body passed", heads_with_body),
        ("heads refused", heads_refused),
        ("hellos named to both", hellos_named),
    ] {
        assert!(n >= 100, "{what}: {n} of 2000");
    }
}

/// What OpenSSL's server (Python's `ssl`, fed each hello through memory BIOs) does with
/// each ClientHello record of its standard input, one hex line each: how its handshake
/// ended, and the names its servername callback was given — the name a server routes by.
const OPENSSL_SNI: &str = r#"
import json, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
seen = []
ctx.sni_callback = lambda obj, name, c: seen.append(name)
out = []
for line in sys.stdin:
    seen.clear()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = ctx.wrap_bio(incoming, outgoing, server_side=True)
    incoming.write(bytes.fromhex(line.strip()))
    try:
        server.do_handshake()
        status = "done"
    except ssl.SSLWantReadError:
        status = "want"
    except ssl.SSLError as e:
        status = "err:" + str(e.reason)
    out.append({"status": status, "names": list(seen)})
print(json.dumps(out))
"#;

/// The property above with OpenSSL as the server, over a fixed sample (one Python run):
/// wherever OpenSSL's servername callback runs for a hello the guard reads as asking for
/// one name, it is given exactly that name. (The server here has no certificate, so
/// every handshake ends after the callback: the name is what is compared.)
#[test]
fn a_hello_names_to_openssl_the_host_it_names_to_the_guard() {
    use std::io::Write as _;

    use proptest::{strategy::ValueTree as _, test_runner::TestRunner};
    let mut runner = TestRunner::deterministic();
    // PROPTEST_CASES asks for a longer run here too.
    let samples = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0usize)
        .max(3000);
    let named: Vec<(Vec<u8>, String)> = (0..samples)
        .filter_map(|_| {
            let hello = any_hello().new_tree(&mut runner).expect("sample").current();
            let message = tls::complete_hello(&hello).ok()??;
            match tls::hello_name(&message) {
                tls::Hello::Name(name) => Some((hello, name)),
                _ => None,
            }
        })
        .collect();
    let mut python = std::process::Command::new("python3")
        .args(["-c", OPENSSL_SNI])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (installed by cargo xtask setup)");
    let input: String = named
        .iter()
        .map(|(hello, _)| {
            let hex: String = hello.iter().map(|b| format!("{b:02x}")).collect();
            hex + "\n"
        })
        .collect();
    python
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write hellos");
    let out = python.wait_with_output().expect("python3 ran");
    assert!(out.status.success(), "python3 failed");
    let answers: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).expect("python3's JSON");
    assert_eq!(answers.len(), named.len());
    let mut called = 0;
    for ((hello, name), answer) in named.iter().zip(&answers) {
        let names: Vec<Option<String>> = answer["names"]
            .as_array()
            .expect("names")
            .iter()
            .map(|n| n.as_str().map(str::to_ascii_lowercase))
            .collect();
        if !names.is_empty() {
            called += 1;
            assert_eq!(
                names,
                [Some(name.clone())],
                "the guard read {name}: {hello:02x?}"
            );
        }
    }
    println!(
        "{} hellos the guard reads as one name; OpenSSL's servername callback ran for {called}",
        named.len()
    );
    assert!(called >= 50, "OpenSSL's callback ran for only {called}");
}
