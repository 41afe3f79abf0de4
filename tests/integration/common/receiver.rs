//! A webhook receiver on 127.0.0.1 for alert tests: records every request and answers with
//! scripted statuses.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A webhook receiver: answers each request with the next scripted status (200 when the
/// script is empty), or never answers when `hang` is set.
#[derive(Clone)]
pub struct Receiver {
    received: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
}

impl Receiver {
    pub async fn start_on(listener: TcpListener, script: &[u16], hang: bool) -> Receiver {
        let receiver = Receiver {
            received: Arc::default(),
            script: Arc::new(Mutex::new(script.iter().copied().collect())),
        };
        let r = receiver.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let r = r.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    let (headers, body_start, length) = loop {
                        let n = socket.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let mut slots = [httparse::EMPTY_HEADER; 32];
                        let mut request = httparse::Request::new(&mut slots);
                        if let Ok(httparse::Status::Complete(end)) = request.parse(&buf) {
                            let headers: Vec<(String, String)> = request
                                .headers
                                .iter()
                                .map(|h| {
                                    (
                                        h.name.to_string(),
                                        String::from_utf8_lossy(h.value).into_owned(),
                                    )
                                })
                                .collect();
                            let length = headers
                                .iter()
                                .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
                                .map(|(_, v)| v.parse::<usize>().unwrap())
                                .unwrap_or(0);
                            break (headers, end, length);
                        }
                    };
                    while buf.len() < body_start + length {
                        let n = socket.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    r.received.lock().unwrap().push(Received {
                        headers,
                        body: buf[body_start..body_start + length].to_vec(),
                    });
                    if hang {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                    let status = r.script.lock().unwrap().pop_front().unwrap_or(200);
                    let _ = socket
                        .write_all(
                            format!(
                                "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                            )
                            .as_bytes(),
                        )
                        .await;
                });
            }
        });
        receiver
    }

    pub async fn start(script: &[u16], hang: bool) -> (Receiver, u16) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        (Receiver::start_on(listener, script, hang).await, port)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}
