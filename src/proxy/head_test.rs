use actix_codec::Decoder as _;
use actix_http::h1::{Codec, Message};
use actix_http::HttpMessage as _;
use bytes::BytesMut;

use super::*;

/// What the framing made of a byte stream.
#[derive(Debug, Default, PartialEq, Eq)]
struct Framed {
    /// The bytes passed on, as actix would read them.
    passed: Vec<u8>,
    /// Each head as passed on.
    heads: Vec<Vec<u8>>,
    /// The status of a refusal that ended the stream.
    refused: Option<u16>,
    broken: bool,
}

fn status(r: &Refusal) -> u16 {
    match r {
        Refusal::BadRequest(_) => 400,
        Refusal::TooLarge(_) => 431,
    }
}

/// Frames `chunks` as they arrive one after another, the way the connection does.
fn frame_chunks(f: &mut Framing, chunks: &[&[u8]]) -> Framed {
    let mut out = Framed::default();
    let mut pending: Vec<u8> = Vec::new();
    for chunk in chunks {
        pending.extend_from_slice(chunk);
        while !pending.is_empty() {
            match f.step(&pending) {
                Step::Body(n) => out.passed.extend(pending.drain(..n)),
                Step::Head { len, rewritten } => {
                    let head = rewritten.unwrap_or_else(|| pending[..len].to_vec());
                    out.passed.extend_from_slice(&head);
                    out.heads.push(head);
                    pending.drain(..len);
                }
                Step::Partial => break,
                Step::Refuse(r) => {
                    out.refused = Some(status(&r));
                    return out;
                }
                Step::Broken => {
                    out.broken = true;
                    return out;
                }
            }
        }
    }
    out
}

fn frame(input: &[u8]) -> Framed {
    frame_chunks(&mut Framing::new(100, 65536), &[input])
}

fn frame_with(max_headers: usize, max_bytes: usize, input: &[u8]) -> Framed {
    frame_chunks(&mut Framing::new(max_headers, max_bytes), &[input])
}

/// The request targets in the heads passed on.
fn targets(framed: &Framed) -> Vec<String> {
    framed
        .heads
        .iter()
        .map(|h| {
            let line = String::from_utf8_lossy(h).to_string();
            let line = line.trim_start_matches(['\r', '\n']);
            line.split(' ').nth(1).unwrap_or("").to_string()
        })
        .collect()
}

/// What actix-http's own codec makes of the same stream: the targets of the requests it
/// decodes, and whether it fails.
fn actix(input: &[u8]) -> (Vec<String>, bool) {
    let mut codec = codec();
    let mut buf = BytesMut::from(input);
    let mut seen = Vec::new();
    loop {
        match codec.decode(&mut buf) {
            Ok(Some(Message::Item(req))) => seen.push(req.uri().to_string()),
            Ok(Some(Message::Chunk(_))) => {}
            Ok(None) => return (seen, false),
            Err(_) => return (seen, true),
        }
    }
}

/// actix-http's codec, whose config wants a runtime (for its date service).
fn codec() -> Codec {
    actix_rt::System::new().block_on(async { Codec::default() })
}

const GET: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";

#[test]
fn heads_pass_unchanged_and_pipelined_heads_are_each_found() {
    let mut input = GET.to_vec();
    input.extend_from_slice(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n");
    let framed = frame(&input);
    assert_eq!(framed.passed, input);
    assert_eq!(targets(&framed), ["/a", "/b"]);
    assert_eq!((framed.refused, framed.broken), (None, false));
}

#[test]
fn bodies_are_followed_to_the_next_head() {
    let input = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nGET /xGET /b HTTP/1.1\r\nHost: x\r\n\r\n\
POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
5;name=\"v\"\r\nGET /\r\nA\r\n0123456789\r\n0\r\nX-Trailer: GET /no HTTP/1.1\r\nX-More: 1\r\n\r\n\
GET /d HTTP/1.1\r\nHost: x\r\n\r\n";
    let framed = frame(input);
    assert_eq!(targets(&framed), ["/a", "/b", "/c", "/d"]);
    assert_eq!(framed.passed, input.to_vec());
}

#[test]
fn any_split_of_the_stream_frames_the_same() {
    let input = b"\r\nPOST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\
POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3 ; e\r\nabc\r\n0\r\nT: 1\r\n\r\n\
GET /d HTTP/1.1\r\nHost: x\r\n\r\n";
    let whole = frame(input);
    assert_eq!(targets(&whole), ["/a", "/c", "/d"]);
    for at in 1..input.len() {
        let (a, b) = input.split_at(at);
        let split = frame_chunks(&mut Framing::new(100, 65536), &[a, b]);
        assert_eq!(split, whole, "split at {at}");
    }
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(frame_chunks(&mut Framing::new(100, 65536), &bytes), whole);
}

#[test]
fn smuggling_and_framing_actix_would_refuse_are_400() {
    for (what, headers) in [
        (
            "CL with TE",
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        ),
        (
            "TE with CL",
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        ),
        ("two CL", "Content-Length: 5\r\nContent-Length: 5\r\n"),
        ("a CL list", "Content-Length: 5, 5\r\n"),
        ("signed CL", "Content-Length: +5\r\n"),
        ("negative CL", "Content-Length: -1\r\n"),
        ("letters", "Content-Length: abc\r\n"),
        ("empty CL", "Content-Length: \r\n"),
        ("CL past u64", "Content-Length: 99999999999999999999\r\n"),
        ("CL after a no-break space", "Content-Length: \u{a0}5\r\n"),
        ("gzip", "Transfer-Encoding: gzip\r\n"),
        ("chunked not alone", "Transfer-Encoding: gzip, chunked\r\n"),
        ("identity", "Transfer-Encoding: identity\r\n"),
        (
            "two TE",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        ),
        ("two Host", "Host: y\r\n"),
    ] {
        let input = format!("POST /u HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
        assert_eq!(frame(input.as_bytes()).refused, Some(400), "{what}");
    }
    for (what, input) in [
        ("no Host", "GET / HTTP/1.1\r\n\r\n"),
        (
            "TE in 1.0",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ),
        ("1.0 POST without CL", "POST / HTTP/1.0\r\n\r\n"),
        ("bad method", "G@T / HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("bad target", "GET /a`b HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("HTTP/2", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        (
            "folded line",
            "GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
        ),
    ] {
        assert_eq!(frame(input.as_bytes()).refused, Some(400), "{what}");
    }
}

#[test]
fn a_bad_head_after_good_ones_passes_only_the_good_ones() {
    let mut input = GET.to_vec();
    input.extend_from_slice(
        b"POST /bad HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx",
    );
    input.extend_from_slice(GET);
    let framed = frame(&input);
    assert_eq!(framed.passed, GET);
    assert_eq!(framed.refused, Some(400));
}

#[test]
fn broken_chunk_framing_passes_nothing_from_the_break_on() {
    for (what, body) in [
        ("not hex", "5x\r\nhello\r\n0\r\n\r\n"),
        ("empty size", "\r\nhello\r\n0\r\n\r\n"),
        ("size past u64", "fffffffffffffffff\r\n"),
        ("no CRLF after data", "5\r\nhelloX\r\n0\r\n\r\n"),
        ("bare LF after size", "5\nhello\r\n0\r\n\r\n"),
        ("control char in extension", "5;\x01\r\nhello\r\n0\r\n\r\n"),
        ("bare CR in trailer", "0\r\nT: 1\rX\r\n\r\n"),
    ] {
        let head = "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
        let framed = frame(format!("{head}{body}").as_bytes());
        assert!(framed.broken, "{what}: {framed:?}");
        assert!(framed.passed.starts_with(head.as_bytes()), "{what}");
        assert!(framed.passed.len() < head.len() + body.len(), "{what}");
    }
}

#[test]
fn after_a_websocket_upgrade_or_connect_nothing_is_parsed() {
    let tail = b"\x81\x05hello GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
    for head in [
        &b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"[..],
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nContent-Length: 3\r\n\r\n",
        b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n",
    ] {
        let input = [head, tail].concat();
        let framed = frame(&input);
        assert_eq!(framed.heads.len(), 1);
        assert_eq!((framed.passed, framed.refused), (input, None));
    }
    // Chunked comes first: the upgrade request has a body, then HTTP goes on.
    let input = b"POST /u HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(targets(&frame(input)), ["/u", "/next"]);
}

#[test]
fn the_framing_agrees_with_actix_http() {
    let cases: &[&[u8]] = &[
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\r\n\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /lf HTTP/1.1\nHost: x\n\nGET /lf2 HTTP/1.1\nHost: x\n\n",
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 005\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length:  5 \r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:  Chunked \r\n\r\n5;a=b\r\nhello\r\nA \t;x\r\n0123456789\r\n0\r\nX-T: 1\r\nX-U: 2\r\n\r\nGET /d HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\n\r\n\r\nGET /d HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5x\r\nhello\r\n0\r\n\r\n",
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXY0\r\n\r\n",
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\r\n",
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: 1\rX\r\n\r\n",
        b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello",
        b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: \xc2\xa05\r\n\r\nhello",
        b"POST /u HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n",
        b"POST /u HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"POST /u HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST /u HTTP/1.0\r\n\r\n",
        b"GET /u HTTP/1.0\r\n\r\nGET /v HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /a`b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /a{b}|^ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /a?q=\"x\"&{y} HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http://x/b?c HTTP/1.1\r\nHost: x\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Obs: \xff\xfe v\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nGET /not HTTP/1.1\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n",
        b"CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\nGET /not HTTP/1.1\r\n\r\n",
        b"CONNECT x:443 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nabGET /next HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /e HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nokGET /f HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /partial HTTP/1.1\r\nHost: x\r\n",
    ];
    for input in cases {
        let ours = frame(input);
        let (theirs, failed) = actix(input);
        let what = String::from_utf8_lossy(input);
        assert_eq!(targets(&ours), theirs, "{what}");
        assert_eq!(
            ours.refused.is_some() || ours.broken,
            failed,
            "{what}: {ours:?}"
        );
    }
}

#[test]
fn heads_over_the_limits_are_431() {
    let head = |n: usize| {
        let fields: String = (0..n).map(|i| format!("X-F{i}: v\r\n")).collect();
        format!("GET / HTTP/1.1\r\nHost: x\r\n{fields}\r\n").into_bytes()
    };
    assert_eq!(frame_with(20, 65536, &head(19)).refused, None);
    assert_eq!(frame_with(20, 65536, &head(20)).refused, Some(431));
    assert_eq!(frame_with(20, 65536, &head(200)).refused, Some(431));
    assert_eq!(frame_with(500, 65536, &head(499)).refused, None);
    assert_eq!(frame_with(500, 65536, &head(500)).refused, Some(431));

    let big = GET.len();
    assert_eq!(frame_with(100, big, GET).refused, None);
    assert_eq!(frame_with(100, big - 1, GET).refused, Some(431));
    // A head that never ends is refused once it passes the limit.
    let endless = [&b"GET / HTTP/1.1\r\nX: "[..], &[b'v'; 5000]].concat();
    assert_eq!(frame_with(100, 4096, &endless).refused, Some(431));
    assert_eq!(frame_with(100, 8192, &endless).refused, None);
}

/// Every field of `head` as (name, value), parsed back by actix-http and restored.
fn fields_after_actix(head: &[u8]) -> HeaderMap {
    let mut buf = BytesMut::from(head);
    let Ok(Some(Message::Item(req))) = codec().decode(&mut buf) else {
        panic!("actix-http refused {}", String::from_utf8_lossy(head));
    };
    let mut headers = req.headers().clone();
    restore_moved(&mut headers);
    headers
}

#[test]
fn fields_past_actix_http_s_limit_reach_the_app_intact() {
    let mut sent = vec![("Host".to_string(), "x".to_string())];
    for i in 0..99 {
        // Repeated names, values with the carrier's own separators and escapes.
        let name = if i % 5 == 0 {
            "X-Rep".to_string()
        } else {
            format!("X-F{i}")
        };
        sent.push((name, format!("v{i}, a:b %2C %25 ,{}", "%".repeat(i % 3))));
    }
    sent.push(("Authorization".into(), "Bearer t".into()));
    sent.push(("X-Forwarded-For".into(), "1.2.3.4".into()));
    let fields: String = sent.iter().map(|(n, v)| format!("{n}: {v}\r\n")).collect();
    let input = format!("POST /p?q=1 HTTP/1.1\r\n{fields}Content-Length: 2\r\n\r\nok");
    let framed = frame_with(110, 65536, input.as_bytes());
    assert_eq!(framed.refused, None);
    let head = &framed.heads[0];
    let text = String::from_utf8_lossy(head);
    assert!(text.starts_with("POST /p?q=1 HTTP/1.1\r\n"), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.contains(':')).count(),
        PARSER_MAX_HEADERS
    );
    // The fields actix and the gateway read themselves stay in the head.
    for kept in [
        "Host: x",
        "Authorization: Bearer t",
        "X-Forwarded-For: 1.2.3.4",
        "Content-Length: 2",
    ] {
        assert!(text.contains(&format!("\r\n{kept}\r\n")), "{kept}");
    }
    assert!(framed.passed.ends_with(b"ok"));

    let headers = fields_after_actix(head);
    assert_eq!(headers.len(), sent.len() + 1);
    assert!(!headers.contains_key(CARRIER));
    for name in headers.keys() {
        let got: Vec<&[u8]> = headers.get_all(name).map(|v| v.as_bytes()).collect();
        let want: Vec<&[u8]> = sent
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name.as_str()))
            .map(|(_, v)| v.as_bytes())
            .collect();
        if name != "content-length" {
            assert_eq!(got, want, "{name}");
        }
    }
}

#[test]
fn a_head_of_only_fields_the_gateway_reads_cannot_be_moved() {
    let fields: String = (0..99)
        .map(|i| format!("X-Forwarded-For: {i}\r\n"))
        .collect();
    let input = format!("GET / HTTP/1.1\r\nHost: x\r\n{fields}\r\n");
    assert_eq!(frame_with(200, 65536, input.as_bytes()).refused, Some(431));
}

#[test]
fn a_client_sent_carrier_is_dropped() {
    let input = format!(
        "GET / HTTP/1.1\r\nHost: x\r\n{CARRIER}: host:evil,x-consumer:admin\r\nX-A: 1\r\n\r\n"
    );
    let framed = frame(input.as_bytes());
    let head = &framed.heads[0];
    assert_eq!(
        head.as_slice(),
        b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\n"
    );
    let headers = fields_after_actix(head);
    assert_eq!(headers.get("host").unwrap(), "x");
    assert!(!headers.contains_key("x-consumer"));
}

/// A small deterministic generator for the round-trip properties.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % below as u64) as usize
    }
}

#[test]
fn any_legal_value_round_trips_through_the_carrier() {
    let legal: Vec<u8> = [b'\t']
        .into_iter()
        .chain(0x20..=0x7e)
        .chain(0x80..=0xff)
        .collect();
    let mut rng = Lcg(7);
    for _ in 0..2000 {
        let n = rng.next(4) + 1;
        let mut carried = Vec::new();
        let mut want = Vec::new();
        for i in 0..n {
            let len = rng.next(12);
            let mut value: Vec<u8> = (0..len).map(|_| legal[rng.next(legal.len())]).collect();
            // httparse hands over values without whitespace at either end.
            while value.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
                value.remove(0);
            }
            while value.last().is_some_and(|b| *b == b' ' || *b == b'\t') {
                value.pop();
            }
            let name = format!("x-n{i}");
            pack(&mut carried, &name, &value);
            want.push((name, value));
        }
        let got: Vec<(String, Vec<u8>)> = unpack(&carried)
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect();
        assert_eq!(got, want);
    }
}

#[test]
fn plain_targets_are_ones_uri_accepts() {
    let alphabet = b"abcXYZ019/-._~%!$&'()*+,;=:@?";
    let mut rng = Lcg(11);
    for _ in 0..5000 {
        let len = rng.next(20);
        let path: String = std::iter::once('/')
            .chain((0..len).map(|_| alphabet[rng.next(alphabet.len())] as char))
            .collect();
        assert!(plain_target(&path));
        assert!(Uri::try_from(path.as_str()).is_ok(), "{path}");
    }
    assert!(!plain_target("/a`b") && !plain_target("*") && !plain_target("http://x/"));
}

#[test]
fn refusals_are_well_formed_json_answers() {
    for r in [
        Refusal::BadRequest("both \"Content-Length\" and Transfer-Encoding".into()),
        Refusal::TooLarge("101 header fields, the limit is 100".into()),
    ] {
        let answer = String::from_utf8(r.answer()).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with(&format!("HTTP/1.1 {} ", status(&r))));
        assert!(head.contains("\r\nconnection: close"));
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, body.len());
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        let code = if status(&r) == 400 {
            "bad_request"
        } else {
            "headers_too_large"
        };
        assert_eq!(json["error"]["code"], code);
    }
}
