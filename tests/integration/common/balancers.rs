//! Debian's nginx and HAProxy as the load balancers in front of gaitkeeper, started by a test
//! with a config it writes, on 127.0.0.1 and a free port; killed on drop.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

/// A balancer process and the address it listens on.
pub struct Balancer {
    pub addr: SocketAddr,
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find(name: &str) -> String {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin"] {
        let path = format!("{dir}/{name}");
        if Path::new(&path).exists() {
            return path;
        }
    }
    panic!("{name} is not installed; run scripts/setup.sh --test (Debian package `{name}`)");
}

impl Balancer {
    /// nginx with `http_body` in its `http { … }` block (a `server` that listens on the
    /// `{port}` it is given, and any `upstream`s).
    pub async fn nginx(dir: &Path, http_body: impl FnOnce(u16) -> String) -> Balancer {
        let port = free_port();
        let root = dir.join("nginx");
        std::fs::create_dir_all(&root).unwrap();
        let p = root.display();
        // As root, nginx's workers would become `nobody`, who cannot use a test's private
        // temp directory.
        let user = if is_root() { "user root;" } else { "" };
        let conf = format!(
            "{user}\nworker_processes 1;\ndaemon off;\npid {p}/nginx.pid;\nerror_log {p}/error.log info;\nevents {{ worker_connections 256; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {p}/body; proxy_temp_path {p}/proxy;\n  fastcgi_temp_path {p}/fcgi; uwsgi_temp_path {p}/uwsgi; scgi_temp_path {p}/scgi;\n{}\n}}\n",
            http_body(port)
        );
        std::fs::write(root.join("nginx.conf"), conf).unwrap();
        let child = Command::new(find("nginx"))
            .arg("-p")
            .arg(&root)
            .arg("-c")
            .arg(root.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self::ready(port, child, root.join("error.log")).await
    }

    /// HAProxy with `body` after its `global`/`defaults` sections (a frontend that binds the
    /// `{port}` it is given, and a backend).
    pub async fn haproxy(dir: &Path, body: impl FnOnce(u16) -> String) -> Balancer {
        let port = free_port();
        let root = dir.join("haproxy");
        std::fs::create_dir_all(&root).unwrap();
        let conf = format!(
            "global\n  maxconn 256\ndefaults\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n{}\n",
            body(port)
        );
        std::fs::write(root.join("haproxy.cfg"), conf).unwrap();
        let log = root.join("haproxy.log");
        let child = Command::new(find("haproxy"))
            .arg("-db")
            .arg("-f")
            .arg(root.join("haproxy.cfg"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self::ready(port, child, log).await
    }

    async fn ready(port: u16, mut child: Child, log: std::path::PathBuf) -> Balancer {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "the balancer exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "the balancer did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Balancer { addr, child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}
