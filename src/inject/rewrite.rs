//! Streaming HTML rewriting: decodes the app's compressed body, lets lol_html insert the
//! script tag, and hands the result on chunk by chunk. Pages are never buffered whole.

use std::io::Write;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use lol_html::html_content::ContentType;
use lol_html::send::{HtmlRewriter, Settings};
use lol_html::{element, end, AsciiCompatibleEncoding, MemorySettings};

/// The content codings gaitkeeper can undo before rewriting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
    Deflate,
    Brotli,
}

impl Coding {
    /// Parses a `Content-Encoding` value; `None` for codings we cannot undo (zstd, stacked).
    pub(crate) fn from_header(value: Option<&str>) -> Option<Coding> {
        match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("identity") => Some(Coding::Identity),
            Some("gzip") | Some("x-gzip") => Some(Coding::Gzip),
            Some("deflate") => Some(Coding::Deflate),
            Some("br") => Some(Coding::Brotli),
            _ => None,
        }
    }
}

/// Where the tag went, for metrics and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Not placed yet (or the page ended without any content).
    Pending,
    EndOfHead,
    StartOfBody,
    EndOfDocument,
}

/// Why a page could not be rewritten. The response then continues unmodified where possible.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error("the compressed body is corrupt: {0}")]
    Decode(std::io::Error),
    #[error("the HTML rewriter failed: {0}")]
    Html(String),
}

/// Inflating writer for the body's content coding; output goes into a Vec we drain.
enum Decoder {
    Identity,
    Gzip(flate2::write::MultiGzDecoder<Vec<u8>>),
    Zlib(flate2::write::ZlibDecoder<Vec<u8>>),
    RawDeflate(flate2::write::DeflateDecoder<Vec<u8>>),
    /// `deflate` is zlib-wrapped by the standard, raw in some servers: decided on the first
    /// two bytes, held here until they arrive.
    DeflateUndecided(Vec<u8>),
    Brotli(Box<brotli::DecompressorWriter<Vec<u8>>>),
}

impl Decoder {
    fn new(coding: Coding) -> Decoder {
        match coding {
            Coding::Identity => Decoder::Identity,
            Coding::Gzip => Decoder::Gzip(flate2::write::MultiGzDecoder::new(Vec::new())),
            Coding::Deflate => Decoder::DeflateUndecided(Vec::new()),
            Coding::Brotli => {
                Decoder::Brotli(Box::new(brotli::DecompressorWriter::new(Vec::new(), 8192)))
            }
        }
    }

    /// Feeds compressed bytes, returns what could be decoded so far.
    fn decode(&mut self, input: &[u8]) -> std::io::Result<Vec<u8>> {
        if let Decoder::DeflateUndecided(held) = self {
            held.extend_from_slice(input);
            if held.len() < 2 {
                return Ok(Vec::new());
            }
            let start = std::mem::take(held);
            self.decide_deflate(&start);
            return self.decode(&start);
        }
        match self {
            Decoder::Identity => Ok(input.to_vec()),
            Decoder::Gzip(d) => {
                d.write_all(input)?;
                Ok(std::mem::take(d.get_mut()))
            }
            Decoder::Zlib(d) => {
                d.write_all(input)?;
                Ok(std::mem::take(d.get_mut()))
            }
            Decoder::RawDeflate(d) => {
                d.write_all(input)?;
                Ok(std::mem::take(d.get_mut()))
            }
            Decoder::Brotli(d) => {
                d.write_all(input)?;
                Ok(std::mem::take(d.get_mut()))
            }
            Decoder::DeflateUndecided(_) => Ok(Vec::new()),
        }
    }

    fn decide_deflate(&mut self, start: &[u8]) {
        // A zlib stream starts with CMF 0x?8 where (CMF*256 + FLG) % 31 == 0.
        let zlib = start.len() >= 2
            && start[0] & 0x0f == 8
            && (u16::from(start[0]) * 256 + u16::from(start[1])) % 31 == 0;
        *self = if zlib {
            Decoder::Zlib(flate2::write::ZlibDecoder::new(Vec::new()))
        } else {
            Decoder::RawDeflate(flate2::write::DeflateDecoder::new(Vec::new()))
        };
    }

    fn finish(&mut self) -> std::io::Result<Vec<u8>> {
        match self {
            Decoder::Identity => Ok(Vec::new()),
            Decoder::DeflateUndecided(held) if held.is_empty() => Ok(Vec::new()),
            Decoder::DeflateUndecided(held) => {
                let start = std::mem::take(held);
                self.decide_deflate(&start);
                let mut out = self.decode(&start)?;
                out.extend(self.finish()?);
                Ok(out)
            }
            Decoder::Gzip(d) => {
                d.try_finish()?;
                Ok(std::mem::take(d.get_mut()))
            }
            Decoder::Zlib(d) => {
                d.try_finish()?;
                Ok(std::mem::take(d.get_mut()))
            }
            Decoder::RawDeflate(d) => {
                d.try_finish()?;
                Ok(std::mem::take(d.get_mut()))
            }
            Decoder::Brotli(d) => {
                d.flush()?;
                Ok(std::mem::take(d.get_mut()))
            }
        }
    }
}

type Sink = Box<dyn FnMut(&[u8]) + Send>;

/// Rewrites one HTML response body, chunk by chunk.
pub struct PageRewriter {
    decoder: Decoder,
    html: Option<HtmlRewriter<'static, Sink>>,
    output: Arc<Mutex<Vec<u8>>>,
    placement: Arc<Mutex<Placement>>,
    failed: bool,
}

/// lol_html's own buffering is bounded; a page needing more (a giant attribute or comment)
/// fails rewriting rather than growing memory without limit.
const MAX_REWRITER_MEMORY: usize = 8 * 1024 * 1024;

impl PageRewriter {
    /// `tag` is the complete `<script …></script>` element to insert. `charset` is the
    /// response's declared charset, if any.
    pub fn new(tag: String, coding: Coding, charset: Option<&str>) -> PageRewriter {
        let output = Arc::new(Mutex::new(Vec::with_capacity(16 * 1024)));
        let placement = Arc::new(Mutex::new(Placement::Pending));
        let encoding = charset
            .and_then(|c| encoding_rs::Encoding::for_label(c.trim().as_bytes()))
            .and_then(AsciiCompatibleEncoding::new)
            .unwrap_or_else(AsciiCompatibleEncoding::utf_8);

        let sink_output = output.clone();
        let sink: Sink = Box::new(move |chunk: &[u8]| {
            sink_output
                .lock()
                .expect("not poisoned")
                .extend_from_slice(chunk);
        });
        let (head_tag, body_tag, end_tag) = (tag.clone(), tag.clone(), tag);
        let (head_place, body_place, end_place) =
            (placement.clone(), placement.clone(), placement.clone());
        let settings = Settings::new_send()
            .append_element_content_handler(element!("head", move |el| {
                let place = head_place.clone();
                let tag = head_tag.clone();
                if let Some(handlers) = el.end_tag_handlers() {
                    let handler: lol_html::send::EndTagHandler<'static> = Box::new(move |end| {
                        let mut place = place.lock().expect("not poisoned");
                        if *place == Placement::Pending {
                            end.before(&tag, ContentType::Html);
                            *place = Placement::EndOfHead;
                        }
                        Ok(())
                    });
                    handlers.push(handler);
                }
                Ok(())
            }))
            .append_element_content_handler(element!("body", move |el| {
                let mut place = body_place.lock().expect("not poisoned");
                if *place == Placement::Pending {
                    el.prepend(&body_tag, ContentType::Html);
                    *place = Placement::StartOfBody;
                }
                Ok(())
            }))
            .append_document_content_handler(end!(move |document_end| {
                let mut place = end_place.lock().expect("not poisoned");
                if *place == Placement::Pending {
                    document_end.append(&end_tag, ContentType::Html);
                    *place = Placement::EndOfDocument;
                }
                Ok(())
            }))
            .with_encoding(encoding)
            // Past the limit lol_html stops rewriting and passes the rest through unchanged.
            .with_memory_settings(
                MemorySettings::new()
                    .with_max_allowed_memory_usage(MAX_REWRITER_MEMORY)
                    .with_graceful_bail_out_on_memory_limit_exceeded(true),
            );
        PageRewriter {
            decoder: Decoder::new(coding),
            html: Some(HtmlRewriter::new(settings, sink)),
            output,
            placement,
            failed: false,
        }
    }

    /// Rewrites the next chunk of the (possibly compressed) body; returns decoded, rewritten
    /// HTML ready to send (possibly empty while lol_html waits for more input).
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Bytes, RewriteError> {
        let decoded = self.decoder.decode(chunk).map_err(RewriteError::Decode)?;
        self.write_html(&decoded)?;
        Ok(self.take_output())
    }

    /// Ends the body: flushes the decoder and the rewriter (placing the tag at the end if
    /// the page had no head or body).
    pub fn finish(&mut self) -> Result<Bytes, RewriteError> {
        let rest = self.decoder.finish().map_err(RewriteError::Decode)?;
        self.write_html(&rest)?;
        if let Some(html) = self.html.take() {
            if !self.failed {
                html.end().map_err(|e| RewriteError::Html(e.to_string()))?;
            }
        }
        Ok(self.take_output())
    }

    pub fn placement(&self) -> Placement {
        *self.placement.lock().expect("not poisoned")
    }

    fn write_html(&mut self, data: &[u8]) -> Result<(), RewriteError> {
        if data.is_empty() {
            return Ok(());
        }
        if self.failed {
            // After a rewriter failure the rest of the page passes through as it is.
            self.output
                .lock()
                .expect("not poisoned")
                .extend_from_slice(data);
            return Ok(());
        }
        if let Some(html) = self.html.as_mut() {
            if let Err(e) = html.write(data) {
                self.failed = true;
                return Err(RewriteError::Html(e.to_string()));
            }
        }
        Ok(())
    }

    fn take_output(&mut self) -> Bytes {
        Bytes::from(std::mem::take(
            &mut *self.output.lock().expect("not poisoned"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAG: &str = "<script src=\"/__gk/capture.js\" defer></script>";

    fn rewrite(page: &[u8], coding: Coding, chunk: usize) -> (String, Placement) {
        let mut rewriter = PageRewriter::new(TAG.to_string(), coding, None);
        let mut out = Vec::new();
        for piece in page.chunks(chunk.max(1)) {
            out.extend_from_slice(&rewriter.feed(piece).unwrap());
        }
        out.extend_from_slice(&rewriter.finish().unwrap());
        (String::from_utf8(out).unwrap(), rewriter.placement())
    }

    const PAGE: &str = "<!doctype html><html><head><title>Login</title></head><body><form method=post><input name=username></form></body></html>";

    fn expected_in_head() -> String {
        PAGE.replace("</head>", &format!("{TAG}</head>"))
    }

    #[test]
    fn tag_goes_before_the_end_of_head_in_any_chunking() {
        for chunk in [1, 2, 7, 64, 10_000] {
            let (out, place) = rewrite(PAGE.as_bytes(), Coding::Identity, chunk);
            assert_eq!(out, expected_in_head(), "chunk size {chunk}");
            assert_eq!(place, Placement::EndOfHead);
        }
    }

    #[test]
    fn without_head_the_tag_starts_the_body() {
        let page = "<html><body><p>hi</p></body></html>";
        let (out, place) = rewrite(page.as_bytes(), Coding::Identity, 5);
        assert_eq!(out, format!("<html><body>{TAG}<p>hi</p></body></html>"));
        assert_eq!(place, Placement::StartOfBody);
    }

    #[test]
    fn head_without_end_tag_falls_back_to_the_body() {
        let page = "<html><head><title>x</title><body><p>hi</p>";
        let (out, place) = rewrite(page.as_bytes(), Coding::Identity, 3);
        assert_eq!(place, Placement::StartOfBody);
        assert!(out.contains(&format!("<body>{TAG}<p>hi</p>")), "{out}");
    }

    #[test]
    fn a_fragment_without_head_or_body_gets_the_tag_at_the_end() {
        let (out, place) = rewrite(b"<form><input name=a></form>", Coding::Identity, 4);
        assert_eq!(out, format!("<form><input name=a></form>{TAG}"));
        assert_eq!(place, Placement::EndOfDocument);
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_deflate_and_brotli_bodies_are_decoded_and_rewritten() {
        let page = PAGE.as_bytes();
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(page).unwrap();
        let zlib = zlib.finish().unwrap();
        let mut raw =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(page).unwrap();
        let raw = raw.finish().unwrap();
        let mut br = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut br, 4096, 5, 22);
            w.write_all(page).unwrap();
        }
        for (coding, body) in [
            (Coding::Gzip, gzip(page)),
            (Coding::Deflate, zlib),
            (Coding::Deflate, raw),
            (Coding::Brotli, br),
        ] {
            for chunk in [1, 13, 100_000] {
                let (out, _) = rewrite(&body, coding, chunk);
                assert_eq!(out, expected_in_head(), "{coding:?} chunk {chunk}");
            }
        }
    }

    #[test]
    fn corrupt_compressed_body_is_an_error_not_a_panic() {
        let mut rewriter = PageRewriter::new(TAG.to_string(), Coding::Gzip, None);
        let result = rewriter
            .feed(b"this is not gzip at all, not even close......")
            .and_then(|_| rewriter.finish());
        assert!(matches!(result, Err(RewriteError::Decode(_))));
    }

    #[test]
    fn latin1_pages_keep_their_bytes() {
        let page = b"<html><head><title>Caf\xe9</title></head><body>\xe9t\xe9</body></html>";
        let mut rewriter = PageRewriter::new(TAG.to_string(), Coding::Identity, Some("iso-8859-1"));
        let mut out = rewriter.feed(page).unwrap().to_vec();
        out.extend_from_slice(&rewriter.finish().unwrap());
        let mut expected = b"<html><head><title>Caf\xe9</title>".to_vec();
        expected.extend_from_slice(TAG.as_bytes());
        expected.extend_from_slice(b"</head><body>\xe9t\xe9</body></html>");
        assert_eq!(out, expected);
    }

    #[test]
    fn a_large_page_streams_out_while_it_comes_in() {
        let mut page = String::from("<html><head></head><body>");
        while page.len() < 1_000_000 {
            page.push_str("<p>some paragraph text that fills the page</p>\n");
        }
        page.push_str("</body></html>");
        let mut rewriter = PageRewriter::new(TAG.to_string(), Coding::Identity, None);
        let mut emitted_early = 0;
        for (i, piece) in page.as_bytes().chunks(16 * 1024).enumerate() {
            let out = rewriter.feed(piece).unwrap();
            if i < 10 {
                emitted_early += out.len();
            }
        }
        rewriter.finish().unwrap();
        assert!(
            emitted_early > 100_000,
            "output must not wait for the whole page"
        );
    }
}
