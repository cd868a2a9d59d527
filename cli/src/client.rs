//! Talking to an agent's control socket.

use anyhow::{anyhow, bail, Context, Result};
use popcorn_proto::config::{load_or_solo, NODE_ENV};
use popcorn_proto::control::{decode_line, encode_line, Reply, Request};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// Where to find the agent: from the global flags.
#[derive(Clone)]
pub struct Target {
    pub config: Option<PathBuf>,
    pub node: Option<String>,
    pub socket: Option<PathBuf>,
}

impl Target {
    /// The control socket path and the node name it belongs to.
    pub fn resolve(&self) -> Result<(PathBuf, String)> {
        if let Some(s) = &self.socket {
            return Ok((s.clone(), self.node.clone().unwrap_or_else(|| "?".into())));
        }
        let config = load_or_solo(self.config.as_deref())?;
        let node = self.node.clone().or_else(|| std::env::var(NODE_ENV).ok());
        let me = config.select_node(node.as_deref())?;
        Ok((config.control_socket(&me.name), me.name.clone()))
    }

    /// Connects to the agent.
    pub fn connect(&self) -> Result<Client> {
        let (path, node) = self.resolve()?;
        let stream = UnixStream::connect(&path).map_err(|e| not_running(&path, &node, e))?;
        Ok(Client {
            reader: BufReader::new(stream.try_clone()?),
            stream,
        })
    }

    /// One request, one reply; an error reply becomes an `Err`.
    pub fn call(&self, request: &Request) -> Result<Reply> {
        let mut client = self.connect()?;
        client.send(request)?;
        match client.recv()? {
            Some(Reply::Error { message }) => bail!("{message}"),
            Some(reply) => Ok(reply),
            None => bail!("the agent closed the connection without answering"),
        }
    }
}

fn not_running(path: &Path, node: &str, e: std::io::Error) -> anyhow::Error {
    match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => anyhow!(
            "no popcorn agent is running for node '{node}' (nothing listens on {}): start one with `sudo popcorn-agent start`",
            path.display()
        ),
        std::io::ErrorKind::PermissionDenied => anyhow!(
            "permission denied connecting to the agent at {}",
            path.display()
        ),
        _ => anyhow!("cannot connect to the agent at {}: {e}", path.display()),
    }
}

/// An open control connection.
pub struct Client {
    pub stream: UnixStream,
    reader: BufReader<UnixStream>,
}

impl Client {
    pub fn send(&mut self, request: &Request) -> Result<()> {
        self.stream
            .write_all(&encode_line(request))
            .context("sending to the agent")
    }

    /// Next reply, or `None` if the agent closed the connection.
    pub fn recv(&mut self) -> Result<Option<Reply>> {
        let mut line = Vec::new();
        let n = self
            .reader
            .read_until(b'\n', &mut line)
            .context("reading from the agent")?;
        if n == 0 {
            return Ok(None);
        }
        Ok(Some(
            decode_line(&line).context("unexpected reply from the agent")?,
        ))
    }
}
