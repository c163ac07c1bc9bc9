//! The server's side of host functions (`protocol::host_funcs`): the session's
//! host-function connection, and the wait of a stand-in until the client's function
//! returned. A stand-in blocks the thread that runs it (the driver's callback thread, or
//! the sim's worker), as the application's function blocks it natively; nothing here needs
//! the session's worker, which may itself be waiting for the stream.

use parking_lot::{Condvar, Mutex};
use protocol::frame::{Header, OP_HOST_FUNC};
use protocol::host_funcs::Run;
use std::collections::HashSet;
use std::io;
use std::sync::Arc;
use transport::{Stream, read_exact_into, read_header, write_frame};

/// Largest answer accepted (an id is a postcard `u64`, at most 10 bytes).
const MAX_ANSWER: u32 = 16;

#[derive(Default)]
pub struct HostFuncs {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    /// The connection, once joined; `None` again once it closed.
    writer: Option<Stream>,
    /// Functions the client said have returned, not yet seen by their stand-ins.
    returned: HashSet<u64>,
    /// Whether a connection has joined and closed: no function runs any more.
    closed: bool,
}

impl HostFuncs {
    pub fn new() -> Arc<HostFuncs> {
        Arc::default()
    }

    /// The client's host-function connection has joined: acknowledge it, and read its
    /// answers on a thread of its own. A second one replaces nothing: it is refused.
    pub fn attach(self: &Arc<Self>, mut stream: Stream) -> io::Result<()> {
        let reader = stream.try_clone()?;
        {
            let mut st = self.state.lock();
            if st.writer.is_some() || st.closed {
                return Err(io::Error::other("a host-function connection has joined already"));
            }
            transport::lanes::acknowledge(&mut stream)?;
            st.writer = Some(stream);
        }
        let me = self.clone();
        std::thread::Builder::new().name("vgpu-host-funcs".into()).spawn(move || me.read_answers(reader))?;
        Ok(())
    }

    fn read_answers(&self, mut s: Stream) {
        let why = (|| -> io::Result<()> {
            let mut args = Vec::new();
            loop {
                let h = read_header(&mut s)?;
                if h.op != OP_HOST_FUNC || h.bulk_len != 0 || h.args_len > MAX_ANSWER {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "not a host function's answer"));
                }
                read_exact_into(&mut s, &mut args, h.args_len as usize)?;
                let id: u64 = postcard::from_bytes(&args).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                self.state.lock().returned.insert(id);
                self.changed.notify_all();
            }
        })();
        if let Err(e) = why
            && e.kind() != io::ErrorKind::UnexpectedEof
        {
            tracing::warn!("host-function connection closed: {e}");
        }
        self.close();
    }

    /// No function runs any more (the connection closed, or the session ends): stand-ins
    /// waiting return, and later ones return at once.
    pub fn close(&self) {
        let mut st = self.state.lock();
        st.closed = true;
        if let Some(w) = st.writer.take() {
            w.shutdown();
        }
        drop(st);
        self.changed.notify_all();
    }

    /// Whether the client's connection has joined (a launch without one is refused).
    pub fn joined(&self) -> bool {
        self.state.lock().writer.is_some()
    }

    /// Have the client run function `id` and wait until it returned: as long as the
    /// function runs, as natively, unless the connection closes. `false` if it did not run.
    pub fn run(&self, run: Run) -> bool {
        let mut st = self.state.lock();
        let Ok(args) = postcard::to_allocvec(&run) else { return false };
        let header = Header::request(OP_HOST_FUNC, 0, 0, true, args.len(), 0);
        let sent = match st.writer.as_mut() {
            Some(w) => write_frame(w, &header, &args, &[]),
            None => return false,
        };
        if let Err(e) = sent {
            tracing::warn!("host function {} not run: {e}", run.id);
            drop(st);
            self.close();
            return false;
        }
        loop {
            if st.returned.remove(&run.id) {
                return true;
            }
            if st.closed {
                return false;
            }
            self.changed.wait(&mut st);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Stream, Stream) {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        (Stream::Unix(a), Stream::Unix(b))
    }

    /// The client's side: acknowledge nothing, answer each run with its id.
    fn answer(mut c: Stream, n: usize) -> Vec<Run> {
        let ack = read_header(&mut c).unwrap();
        assert_eq!(ack.op, protocol::frame::OP_JOIN);
        let mut runs = Vec::new();
        let mut args = Vec::new();
        for _ in 0..n {
            let h = read_header(&mut c).unwrap();
            read_exact_into(&mut c, &mut args, h.args_len as usize).unwrap();
            let r: Run = postcard::from_bytes(&args).unwrap();
            let a = postcard::to_allocvec(&r.id).unwrap();
            write_frame(&mut c, &Header::reply(OP_HOST_FUNC, 0, 0, a.len(), 0), &a, &[]).unwrap();
            runs.push(r);
        }
        runs
    }

    #[test]
    fn a_run_waits_for_its_answer() {
        let f = HostFuncs::new();
        assert!(!f.run(Run { id: 1, status: 0, last: true }), "nothing joined: nothing runs");
        let (s, c) = pair();
        f.attach(s).unwrap();
        assert!(f.joined());
        assert!(f.attach(pair().0).is_err(), "one connection a session");
        let client = std::thread::spawn(move || answer(c, 2));
        assert!(f.run(Run { id: 7, status: 0, last: true }));
        assert!(f.run(Run { id: 8, status: 719, last: false }));
        let runs = client.join().unwrap();
        assert_eq!(runs, [Run { id: 7, status: 0, last: true }, Run { id: 8, status: 719, last: false }]);
    }

    #[test]
    fn a_closed_connection_releases_the_stand_in() {
        let f = HostFuncs::new();
        let (s, c) = pair();
        f.attach(s).unwrap();
        let waiting = {
            let f = f.clone();
            std::thread::spawn(move || f.run(Run { id: 3, status: 0, last: true }))
        };
        // The client reads the request and goes away without answering.
        let mut c = c;
        read_header(&mut c).unwrap();
        read_header(&mut c).unwrap();
        drop(c);
        assert!(!waiting.join().unwrap());
        assert!(!f.run(Run { id: 4, status: 0, last: true }), "closed: later ones return at once");
    }

    #[test]
    fn garbage_closes_the_connection() {
        let f = HostFuncs::new();
        let (s, mut c) = pair();
        f.attach(s).unwrap();
        read_header(&mut c).unwrap();
        write_frame(&mut c, &Header::reply(OP_HOST_FUNC, 0, 0, 100, 0), &[0; 100], &[]).unwrap();
        let waiting = {
            let f = f.clone();
            std::thread::spawn(move || f.run(Run { id: 5, status: 0, last: true }))
        };
        assert!(!waiting.join().unwrap());
    }
}
