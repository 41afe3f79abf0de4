//! `Content-Encoding` of a login body: gzip, deflate and br are decoded (apps built on Express,
//! Rack or ASP.NET inflate them and log the user in), bounded by the decoded size so that a
//! decompression bomb costs at most the limit. Any other coding cannot be read.

use std::io::Read;

use super::Unreadable;

/// Most codings stacked on one body (`Content-Encoding: gzip, br`).
const MAX_LAYERS: usize = 2;

/// The body with every listed coding undone, or `None` when it has none (or only
/// `identity`). `values` are the `Content-Encoding` header values in order.
pub(super) fn decode(
    values: &[&str],
    body: &[u8],
    limit: usize,
) -> Result<Option<Vec<u8>>, Unreadable> {
    let codings: Vec<String> = values
        .iter()
        .flat_map(|v| v.split(','))
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty() && c != "identity")
        .collect();
    if codings.is_empty() {
        return Ok(None);
    }
    if codings.len() > MAX_LAYERS {
        return Err(Unreadable::UnsupportedEncoding);
    }
    let mut data = body.to_vec();
    // Codings are listed in the order they were applied: undo the last first.
    for coding in codings.iter().rev() {
        data = match coding.as_str() {
            "gzip" | "x-gzip" => bounded(flate2::read::MultiGzDecoder::new(&data[..]), limit)?,
            // `deflate` is the zlib format; some clients send raw deflate, which inflaters
            // such as Node's accept too.
            "deflate" => match bounded(flate2::read::ZlibDecoder::new(&data[..]), limit) {
                Err(Unreadable::MalformedBody) => {
                    bounded(flate2::read::DeflateDecoder::new(&data[..]), limit)?
                }
                other => other?,
            },
            "br" => bounded(brotli::Decompressor::new(&data[..], 4096), limit)?,
            _ => return Err(Unreadable::UnsupportedEncoding),
        };
    }
    Ok(Some(data))
}

/// Reads at most `limit` bytes from `reader`; more is a bomb.
fn bounded(reader: impl Read, limit: usize) -> Result<Vec<u8>, Unreadable> {
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| Unreadable::MalformedBody)?;
    if out.len() > limit {
        return Err(Unreadable::TooLarge);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_deflate_and_br_are_undone() {
        let body = b"username=alice&password=x";
        assert_eq!(
            decode(&["gzip"], &gzip(body), 1000),
            Ok(Some(body.to_vec()))
        );
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(body).unwrap();
        assert_eq!(
            decode(&["deflate"], &z.finish().unwrap(), 1000),
            Ok(Some(body.to_vec()))
        );
        let mut raw =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(body).unwrap();
        assert_eq!(
            decode(&["Deflate"], &raw.finish().unwrap(), 1000),
            Ok(Some(body.to_vec()))
        );
        let mut br = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut br, 4096, 5, 22);
            w.write_all(body).unwrap();
        }
        assert_eq!(decode(&["br"], &br, 1000), Ok(Some(body.to_vec())));
        assert_eq!(
            decode(
                &["gzip", "br"],
                &{
                    let mut out = Vec::new();
                    {
                        let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
                        w.write_all(&gzip(body)).unwrap();
                    }
                    out
                },
                1000
            ),
            Ok(Some(body.to_vec()))
        );
        assert_eq!(decode(&[], body, 1000), Ok(None));
        assert_eq!(decode(&["identity"], body, 1000), Ok(None));
    }

    #[test]
    fn bombs_unknown_codings_and_garbage_are_refused() {
        let bomb = gzip(&vec![b'a'; 10_000_000]);
        assert!(bomb.len() < 20_000);
        assert_eq!(decode(&["gzip"], &bomb, 65536), Err(Unreadable::TooLarge));
        assert_eq!(
            decode(&["zstd"], b"x", 1000),
            Err(Unreadable::UnsupportedEncoding)
        );
        assert_eq!(
            decode(&["gzip, gzip, gzip"], b"x", 1000),
            Err(Unreadable::UnsupportedEncoding)
        );
        assert_eq!(
            decode(&["gzip"], b"not gzip at all", 1000),
            Err(Unreadable::MalformedBody)
        );
    }
}
