//! The sockets' own round trip, without vgpu: 64 bytes there and back between two threads
//! of this process, over a unix socket pair and over TCP loopback, each side waiting as
//! vgpu's do (the asking side polls for its answer as the client does, the answering side
//! for the next message as the worker does). Issue 6 asks that a synchronous call through
//! vgpu cost at most twice this; the report's note sets the two side by side.

use crate::model::Latency;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// The message size: a frame header and a few arguments, as a synchronize sends.
const MESSAGE: usize = 64;

/// Longest any read or write may wait: a lost peer ends the measurement with an error, not
/// a hang.
const WAIT: Duration = Duration::from_secs(10);

/// The socket kinds measured, by the report's column names.
pub const KINDS: [&str; 2] = ["unix", "tcp"];

/// `iters` round trips over a connected pair of `kind` (`unix` or `tcp`), after a warm-up.
pub fn round_trip(kind: &str, iters: usize) -> Result<Latency, String> {
    let err = |e: std::io::Error| format!("{kind} echo: {e}");
    match kind {
        "unix" => {
            let (a, b) = std::os::unix::net::UnixStream::pair().map_err(err)?;
            for s in [&a, &b] {
                s.set_read_timeout(Some(WAIT)).map_err(err)?;
                s.set_write_timeout(Some(WAIT)).map_err(err)?;
            }
            measure(a, b, iters).map_err(err)
        }
        "tcp" => {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(err)?;
            let a = std::net::TcpStream::connect(listener.local_addr().map_err(err)?).map_err(err)?;
            let (b, _) = listener.accept().map_err(err)?;
            for s in [&a, &b] {
                s.set_nodelay(true).map_err(err)?;
                s.set_read_timeout(Some(WAIT)).map_err(err)?;
                s.set_write_timeout(Some(WAIT)).map_err(err)?;
            }
            measure(a, b, iters).map_err(err)
        }
        _ => Err(format!("no echo over {kind}")),
    }
}

fn measure<S>(mut asker: S, mut answerer: S, iters: usize) -> std::io::Result<Latency>
where
    S: Read + Write + AsRawFd + Send + 'static,
{
    let warm = iters / 10 + 10;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let mut buf = [0u8; MESSAGE];
        for _ in 0..warm + iters {
            transport::wait_readable(answerer.as_raw_fd(), transport::DEFAULT_SPIN);
            answerer.read_exact(&mut buf)?;
            answerer.write_all(&buf)?;
        }
        Ok(())
    });
    let mut buf = [7u8; MESSAGE];
    let mut samples = Vec::with_capacity(iters);
    let mut run = || -> std::io::Result<()> {
        for i in 0..warm + iters {
            let t = Instant::now();
            asker.write_all(&buf)?;
            transport::wait_readable(asker.as_raw_fd(), transport::CLIENT_SPIN);
            asker.read_exact(&mut buf)?;
            if i >= warm {
                samples.push(t.elapsed().as_secs_f64() * 1e6);
            }
        }
        Ok(())
    };
    let asked = run();
    let answered = echo.join().map_err(|_| std::io::Error::other("the echo thread panicked"))?;
    asked?;
    answered?;
    Ok(Latency::from_samples(&samples))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sockets_echo_within_bounds() {
        for kind in KINDS {
            let l = round_trip(kind, 200).unwrap();
            assert_eq!(l.n, 200, "{kind}");
            assert!(l.p50_us > 0.0 && l.p50_us < 100_000.0, "{kind}: {l:?}");
            assert!(l.min_us <= l.p50_us, "{kind}");
        }
        assert!(round_trip("shm", 10).is_err(), "only sockets");
    }
}
