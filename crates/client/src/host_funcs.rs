//! Host functions on streams, the client's side (`protocol::host_funcs`): the application's
//! functions by id, and per server a thread on the session's host-function connection that
//! runs one whenever the server's stand-in for it is reached, then says it returned.

use parking_lot::Mutex;
use protocol::frame::{Header, OP_HOST_FUNC};
use protocol::host_funcs::Run;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use transport::{Conn, Stream, read_exact_into, read_header, write_frame};

/// An application's function with its argument, called with the stream's status.
pub type Func = Arc<dyn Fn(u32) + Send + Sync>;

/// Largest request accepted (a postcard `Run` is at most some 20 bytes).
const MAX_RUN: u32 = 64;

#[derive(Default)]
pub struct HostFuncs {
    next: AtomicU64,
    funcs: Arc<Mutex<HashMap<u64, Func>>>,
    /// Per server, whether its connection is open (its thread running), or why not: asked
    /// once, a refusal is remembered.
    joined: Mutex<HashMap<usize, Result<(), String>>>,
}

impl HostFuncs {
    /// Keep `f` for `server` to run, opening that server's connection the first time.
    pub fn add(&self, server: usize, conn: &Conn, f: Func) -> Result<u64, String> {
        self.joined
            .lock()
            .entry(server)
            .or_insert_with(|| {
                let s = conn
                    .join_host_funcs()
                    .map_err(|e| format!("{}: no host-function connection: {e}", conn.address()))?;
                let funcs = self.funcs.clone();
                std::thread::Builder::new()
                    .name("vgpu-host-funcs".into())
                    .spawn(move || serve(&funcs, s))
                    .map(drop)
                    .map_err(|e| e.to_string())
            })
            .clone()?;
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.funcs.lock().insert(id, f);
        Ok(id)
    }

    /// `id` will not run (its launch failed).
    pub fn remove(&self, id: u64) {
        self.funcs.lock().remove(&id);
    }
}

/// Run what the server asks for until the connection ends (the session's end, or the
/// server's).
fn serve(funcs: &Mutex<HashMap<u64, Func>>, mut s: Stream) {
    let mut args = Vec::new();
    let ended = (|| -> std::io::Result<()> {
        loop {
            let h = read_header(&mut s)?;
            if h.op != OP_HOST_FUNC || h.bulk_len != 0 || h.args_len > MAX_RUN {
                return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "not a host function's request"));
            }
            read_exact_into(&mut s, &mut args, h.args_len as usize)?;
            let run: Run =
                postcard::from_bytes(&args).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            // A function captured into a graph runs at every launch: kept until then.
            let f = match run.last {
                true => funcs.lock().remove(&run.id),
                false => funcs.lock().get(&run.id).cloned(),
            };
            match f {
                // A Rust panic stops here; the application's own code cannot unwind into us.
                Some(f) => _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(run.status))),
                None => {
                    eprintln!("vgpu: the server asked for host function {}, which this process does not have", run.id)
                }
            }
            // Answered either way: the stream waits for it.
            let a = postcard::to_allocvec(&run.id).map_err(std::io::Error::other)?;
            write_frame(&mut s, &Header::reply(OP_HOST_FUNC, 0, 0, a.len(), 0), &a, &[])?;
        }
    })();
    if let Err(e) = ended
        && e.kind() != std::io::ErrorKind::UnexpectedEof
    {
        eprintln!("vgpu: host-function connection ended: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn pair() -> (Stream, Stream) {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        (Stream::Unix(a), Stream::Unix(b))
    }

    /// The server's side: ask for `run`, read the answer's id.
    fn ask(s: &mut Stream, run: Run) -> u64 {
        let a = postcard::to_allocvec(&run).unwrap();
        write_frame(s, &Header::request(OP_HOST_FUNC, 0, 0, true, a.len(), 0), &a, &[]).unwrap();
        let h = read_header(s).unwrap();
        assert_eq!(h.op, OP_HOST_FUNC);
        let mut args = Vec::new();
        read_exact_into(s, &mut args, h.args_len as usize).unwrap();
        postcard::from_bytes(&args).unwrap()
    }

    #[test]
    fn runs_what_is_asked_keeping_captured_ones() {
        let funcs: Arc<Mutex<HashMap<u64, Func>>> = Arc::default();
        let calls = Arc::new(AtomicU32::new(0));
        let status = Arc::new(AtomicU32::new(0));
        {
            let (calls, status) = (calls.clone(), status.clone());
            funcs.lock().insert(
                5,
                Arc::new(move |s| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    status.store(s, Ordering::SeqCst);
                }),
            );
        }
        let (mine, mut server) = pair();
        let serving = {
            let funcs = funcs.clone();
            std::thread::spawn(move || serve(&funcs, mine))
        };
        // In a graph: run twice, kept.
        assert_eq!(ask(&mut server, Run { id: 5, status: 0, last: false }), 5);
        assert_eq!(ask(&mut server, Run { id: 5, status: 719, last: false }), 5);
        assert_eq!((calls.load(Ordering::SeqCst), status.load(Ordering::SeqCst)), (2, 719));
        assert!(funcs.lock().contains_key(&5));
        // Its last run: forgotten after.
        assert_eq!(ask(&mut server, Run { id: 5, status: 0, last: true }), 5);
        assert!(funcs.lock().is_empty());
        // One it does not have is answered all the same: the stream must not wait forever.
        assert_eq!(ask(&mut server, Run { id: 9, status: 0, last: true }), 9);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        // The server gone: the thread ends.
        drop(server);
        serving.join().unwrap();
    }

    #[test]
    fn a_malformed_request_ends_the_connection() {
        let (mine, mut server) = pair();
        let serving = std::thread::spawn(move || serve(&Mutex::default(), mine));
        write_frame(&mut server, &Header::request(OP_HOST_FUNC, 0, 0, true, 200, 0), &[0; 200], &[]).unwrap();
        serving.join().unwrap();
        assert!(read_header(&mut server).is_err(), "closed, nothing answered");
    }
}
