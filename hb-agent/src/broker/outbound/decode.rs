//! Response bodies as the scrubber must see them: without content or transfer codings.
//!
//! Owns: undoing `gzip` (`x-gzip`), `deflate` (zlib-wrapped, or raw as some servers
//! send it), `br` and `zstd`, stacked in any order the headers list (transfer codings
//! other than `chunked` first, then content codings, each list undone from its end).
//! The broker asks upstreams for `identity`; this is for those that compress anyway.
//! Limits against decompression bombs: the decoded body may not exceed
//! `broker.max_response_bytes`, nor [`MAX_RATIO`] times the encoded size once it is
//! past [`RATIO_FLOOR`]; decoding stops as soon as either is crossed.
//!
//! Must never: hand out bytes still encoded (an unknown coding is an error, not a pass),
//! or allocate past the limit.

use std::io::Read;

use bytes::Bytes;
use http::{HeaderMap, header};

/// Decoded bytes per encoded byte, at most (once past [`RATIO_FLOOR`]). Text and JSON
/// compress 3-20×; a bomb reaches 1000× and more.
pub const MAX_RATIO: usize = 100;
/// Decoded sizes up to this are not held to [`MAX_RATIO`]: a small, very repetitive
/// answer may compress far better than that and harms nobody.
pub const RATIO_FLOOR: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error(
        "the response is encoded with \"{coding}\", which the broker cannot decode to scrub it \
         (it decodes gzip, deflate, br and zstd)"
    )]
    Unsupported { coding: String },
    #[error("the response's {coding} encoding is corrupt")]
    Corrupt { coding: &'static str },
    #[error(
        "the response decodes to more than broker.max_response_bytes ({limit} bytes) or more \
         than {MAX_RATIO} times its encoded size: refused as a decompression bomb"
    )]
    TooLarge { limit: usize },
    #[error("the decoded response does not fit in what is left of the tenant's answer budget")]
    NoRoom,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    Gzip,
    Deflate,
    Brotli,
    Zstd,
}

impl Coding {
    fn name(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
        }
    }
}

/// The codings applied to the body, in the order they were applied. `chunked` (undone
/// by the HTTP layer) and `identity` are not codings of the body.
fn codings(headers: &HeaderMap) -> Result<Vec<Coding>, DecodeError> {
    let mut out = Vec::new();
    // The sender content-codes first, then transfer-codes the result.
    for name in [header::CONTENT_ENCODING, header::TRANSFER_ENCODING] {
        for value in headers.get_all(&name) {
            let text = String::from_utf8_lossy(value.as_bytes());
            for token in text.split(',') {
                let token = token.trim().to_ascii_lowercase();
                let coding = match token.as_str() {
                    "" | "identity" | "chunked" => continue,
                    "gzip" | "x-gzip" => Coding::Gzip,
                    "deflate" => Coding::Deflate,
                    "br" => Coding::Brotli,
                    "zstd" => Coding::Zstd,
                    _ => {
                        return Err(DecodeError::Unsupported {
                            coding: token.chars().take(40).collect(),
                        });
                    }
                };
                out.push(coding);
            }
        }
    }
    Ok(out)
}

/// Whether the response carries a coding to undo (so its length headers no longer
/// describe what the caller gets).
pub fn is_encoded(headers: &HeaderMap) -> bool {
    !matches!(codings(headers).as_deref(), Ok([]))
}

/// What a decoding asks before it takes `n` more bytes: whether there is room for them
/// (the tenant's answer budget: a decoded body is held in memory as it grows).
pub type Room<'a> = &'a mut dyn FnMut(usize) -> bool;

/// The body with every coding the headers list undone, within `limit` bytes, each
/// piece of each decoded layer taken only once `room` says there is room for it.
pub fn decode(
    headers: &HeaderMap,
    body: Bytes,
    limit: usize,
    room: Room<'_>,
) -> Result<Bytes, DecodeError> {
    let mut body = body;
    for coding in codings(headers)?.into_iter().rev() {
        body = Bytes::from(decode_one(coding, &body, limit, room)?);
    }
    Ok(body)
}

fn decode_one(
    coding: Coding,
    encoded: &[u8],
    limit: usize,
    room: Room<'_>,
) -> Result<Vec<u8>, DecodeError> {
    let cap = limit.min(RATIO_FLOOR.max(encoded.len().saturating_mul(MAX_RATIO)));
    let corrupt = || DecodeError::Corrupt {
        coding: coding.name(),
    };
    match coding {
        Coding::Gzip => read_capped(flate2::read::MultiGzDecoder::new(encoded), cap, limit, room)
            .map_err(|e| e.unwrap_or_else(corrupt)),
        Coding::Deflate => {
            // RFC 9110 says zlib-wrapped; some servers send the raw stream.
            read_capped(flate2::read::ZlibDecoder::new(encoded), cap, limit, room).or_else(|e| {
                match e {
                    Some(e) => Err(e),
                    None => {
                        read_capped(flate2::read::DeflateDecoder::new(encoded), cap, limit, room)
                            .map_err(|e| e.unwrap_or_else(corrupt))
                    }
                }
            })
        }
        Coding::Brotli => read_capped(
            brotli_decompressor::Decompressor::new(encoded, 16 << 10),
            cap,
            limit,
            room,
        )
        .map_err(|e| e.unwrap_or_else(corrupt)),
        Coding::Zstd => {
            // One frame after another (a sender may write several); the decoder reads
            // from `rest`, which moves on past each frame it consumed.
            let mut rest = encoded;
            let mut out = Vec::new();
            while !rest.is_empty() {
                let decoder =
                    ruzstd::decoding::StreamingDecoder::new(&mut rest).map_err(|_| corrupt())?;
                let part = read_capped(decoder, cap - out.len(), limit, room)
                    .map_err(|e| e.unwrap_or_else(corrupt))?;
                out.extend_from_slice(&part);
            }
            Ok(out)
        }
    }
}

/// Reads `r` to its end, at most `cap` bytes, each piece once `room` has room for it.
/// `Err(None)`: the stream is corrupt; `Err(Some(TooLarge))`: it goes on past `cap`;
/// `Err(Some(NoRoom))`: `room` said no.
fn read_capped(
    mut r: impl Read,
    cap: usize,
    limit: usize,
    room: Room<'_>,
) -> Result<Vec<u8>, Option<DecodeError>> {
    let mut out = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    loop {
        let n = match r.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(None),
        };
        if out.len() + n > cap {
            return Err(Some(DecodeError::TooLarge { limit }));
        }
        if !room(n) {
            return Err(Some(DecodeError::NoRoom));
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("gzip");
        e.finish().expect("gzip")
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("zlib");
        e.finish().expect("zlib")
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).expect("deflate");
        e.finish().expect("deflate")
    }

    #[test]
    fn gzip_and_both_deflates_are_undone() {
        let text = b"https://q.test/echo?api_key=s3cr3t-value".repeat(3);
        for (coding, body) in [
            ("gzip", gzip(&text)),
            ("x-gzip", gzip(&text)),
            ("deflate", zlib(&text)),
            ("deflate", raw_deflate(&text)),
        ] {
            let h = headers(&[("content-encoding", coding)]);
            assert!(is_encoded(&h));
            let out = decode(&h, Bytes::from(body), 1 << 20, &mut |_| true).expect(coding);
            assert_eq!(&out[..], &text[..], "{coding}");
        }
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    #[test]
    fn brotli_and_zstd_are_undone() {
        // Made by Python's brotli and zstandard modules from the text below.
        let text = b"https://q.test/echo?api_key=s3cr3t-value";
        let br = unhex(
            "1b2700f845dd16d3fff02ca62872068a41f52b56301bd5102e91a47395481a62ecdacf6c0bbfa4c7730a",
        );
        let zstd = unhex(
            "28b52ffd202841010068747470733a2f2f712e746573742f6563686f3f6170695f6b65793d7333637233742d76616c7565",
        );
        let zstd_twice = [zstd.clone(), zstd.clone()].concat();
        let h = headers(&[("content-encoding", "zstd")]);
        let out = decode(&h, Bytes::from(zstd_twice), 1 << 20, &mut |_| true).expect("two frames");
        assert_eq!(&out[..], &[&text[..], &text[..]].concat()[..]);
        for (coding, body) in [("br", br), ("zstd", zstd)] {
            let h = headers(&[("content-encoding", coding)]);
            let out = decode(&h, Bytes::from(body), 1 << 20, &mut |_| true).expect(coding);
            assert_eq!(&out[..], &text[..], "{coding}");
        }
    }

    #[test]
    fn stacked_codings_are_undone_in_reverse() {
        let text = b"hello, stacked world";
        let twice = gzip(&zlib(text));
        let h = headers(&[("content-encoding", "deflate, gzip")]);
        assert_eq!(
            &decode(&h, Bytes::from(twice), 1 << 20, &mut |_| true).expect("decodes")[..],
            text
        );
        // A transfer coding was applied after the content coding.
        let twice = zlib(&gzip(text));
        let h = headers(&[
            ("content-encoding", "gzip"),
            ("transfer-encoding", "deflate, chunked"),
        ]);
        assert_eq!(
            &decode(&h, Bytes::from(twice), 1 << 20, &mut |_| true).expect("decodes")[..],
            text
        );
    }

    #[test]
    fn identity_and_no_coding_pass_through() {
        for h in [
            headers(&[]),
            headers(&[("content-encoding", "identity")]),
            headers(&[("transfer-encoding", "chunked")]),
        ] {
            assert!(!is_encoded(&h));
            let out = decode(&h, Bytes::from_static(b"\x1f\x8b plain"), 100, &mut |_| {
                true
            })
            .expect("plain");
            assert_eq!(&out[..], b"\x1f\x8b plain");
        }
    }

    #[test]
    fn unknown_or_corrupt_codings_are_refused() {
        for coding in ["compress", "x-custom", "gzip;q=1"] {
            let h = headers(&[("content-encoding", coding)]);
            assert!(
                matches!(
                    decode(&h, Bytes::from_static(b"abc"), 100, &mut |_| true),
                    Err(DecodeError::Unsupported { .. })
                ),
                "{coding}"
            );
        }
        for coding in ["gzip", "deflate", "br", "zstd"] {
            let h = headers(&[("content-encoding", coding)]);
            assert_eq!(
                decode(
                    &h,
                    Bytes::from_static(b"\x00\x01not encoded at all"),
                    100,
                    &mut |_| true
                ),
                Err(DecodeError::Corrupt {
                    coding: match coding {
                        "gzip" => "gzip",
                        "deflate" => "deflate",
                        "br" => "br",
                        _ => "zstd",
                    }
                }),
                "{coding}"
            );
        }
    }

    /// Every decoded piece of every layer is asked room for before it is taken, and a
    /// refusal stops the decoding there.
    #[test]
    fn each_decoded_piece_is_counted_before_it_is_taken() {
        let text: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
        for (codings, body) in [("gzip", gzip(&text)), ("gzip, gzip", gzip(&gzip(&text)))] {
            let h = headers(&[("content-encoding", codings)]);
            let mut asked = 0;
            let out = decode(&h, Bytes::from(body.clone()), 8 << 20, &mut |n| {
                asked += n;
                true
            })
            .expect(codings);
            assert_eq!(&out[..], &text[..], "{codings}");
            let inner = if codings.contains(',') {
                gzip(&text).len()
            } else {
                0
            };
            assert_eq!(asked, text.len() + inner, "{codings}: every layer's bytes");
            let mut left = 64usize << 10;
            let refused = decode(&h, Bytes::from(body), 8 << 20, &mut |n| {
                let fits = n <= left;
                left = left.saturating_sub(n);
                fits
            });
            assert_eq!(refused, Err(DecodeError::NoRoom), "{codings}");
        }
    }

    #[test]
    fn bombs_stop_at_the_size_limit_and_the_ratio() {
        let zeros = vec![0u8; 4 << 20];
        let bomb = gzip(&zeros);
        assert!(bomb.len() * MAX_RATIO < zeros.len(), "a real bomb");
        let h = headers(&[("content-encoding", "gzip")]);
        // Within the size limit, over the ratio.
        assert_eq!(
            decode(&h, Bytes::from(bomb.clone()), 64 << 20, &mut |_| true),
            Err(DecodeError::TooLarge { limit: 64 << 20 })
        );
        // Over the size limit.
        let small = gzip(&[b'a'; 5000]);
        assert_eq!(
            decode(&h, Bytes::from(small.clone()), 4096, &mut |_| true),
            Err(DecodeError::TooLarge { limit: 4096 })
        );
        assert_eq!(
            decode(&h, Bytes::from(small), 5000, &mut |_| true)
                .expect("fits")
                .len(),
            5000
        );
    }
}
