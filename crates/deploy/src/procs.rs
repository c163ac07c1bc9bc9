//! What a running `ollama serve` and the `ollama.service` unit hold in their environment.

use crate::config::Env;
use std::path::Path;
use std::time::SystemTime;

/// A running `ollama serve`.
#[derive(Clone, Debug)]
pub struct ServeProcess {
    pub pid: u32,
    pub cmdline: Vec<String>,
    /// Its environment, or why it cannot be read (another user's process without root).
    pub env: Result<Env, String>,
    /// When it started (`/proc/PID/stat`'s start time after `/proc/stat`'s boot time).
    pub started: Option<SystemTime>,
    /// Its real user id (`/proc/PID/status`).
    pub uid: Option<u32>,
}

/// `argv` of an `ollama serve` (the server, not `ollama run` or its runners).
pub fn is_ollama_serve(argv: &[String]) -> bool {
    let Some(exe) = argv.first() else {
        return false;
    };
    Path::new(exe).file_name().is_some_and(|n| n == "ollama") && argv.iter().skip(1).any(|a| a == "serve")
}

/// NUL-separated strings (`/proc/PID/cmdline`, `/proc/PID/environ`).
pub fn split_nul(data: &[u8]) -> Vec<String> {
    data.split(|&b| b == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect()
}

pub fn parse_environ(data: &[u8]) -> Env {
    split_nul(data)
        .into_iter()
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect()
}

/// Every `ollama serve` under `proc_dir` (normally `/proc`).
pub fn find_ollama_serve(proc_dir: &Path) -> Vec<ServeProcess> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(proc_dir) else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmdline = split_nul(&cmd);
        if !is_ollama_serve(&cmdline) {
            continue;
        }
        let env = std::fs::read(e.path().join("environ")).map(|d| parse_environ(&d)).map_err(|err| err.to_string());
        let started = start_time(proc_dir, &e.path());
        let uid = std::fs::read_to_string(e.path().join("status")).ok().and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|v| v.split_whitespace().next()?.parse().ok())
        });
        out.push(ServeProcess { pid, cmdline, env, started, uid });
    }
    out.sort_by_key(|p| p.pid);
    out
}

/// The uid of `user` in `passwd` (the contents of `/etc/passwd`); a number is taken as is.
pub fn uid_of(user: &str, passwd: &str) -> Option<u32> {
    if let Ok(n) = user.parse() {
        return Some(n);
    }
    passwd.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == user).then(|| f.nth(1)?.parse().ok()).flatten()
    })
}

/// Whether user `uid` (primary group `gid`, when known) may read a file with `meta`.
pub fn may_read(uid: u32, gid: Option<u32>, meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let mode = meta.mode();
    uid == 0
        || (meta.uid() == uid && mode & 0o400 != 0)
        || (gid.is_some_and(|g| g == meta.gid()) && mode & 0o040 != 0)
        || mode & 0o004 != 0
}

/// When the process whose `/proc` entry is `pid_dir` started.
fn start_time(proc_dir: &Path, pid_dir: &Path) -> Option<SystemTime> {
    let stat = std::fs::read_to_string(pid_dir.join("stat")).ok()?;
    // Fields after "(comm)": state is field 3, starttime field 22.
    let after = &stat[stat.rfind(')')? + 1..];
    let ticks: u64 = after.split_whitespace().nth(19)?.parse().ok()?;
    let btime: u64 = std::fs::read_to_string(proc_dir.join("stat"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).ok().filter(|&h| h > 0)?;
    let at = std::time::Duration::from_secs(btime) + std::time::Duration::from_millis(ticks * 1000 / hz);
    Some(SystemTime::UNIX_EPOCH + at)
}

/// The parts of `systemctl show` the doctor uses.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Unit {
    pub load_state: String,
    pub active_state: String,
    pub fragment_path: String,
    pub drop_in_paths: Vec<String>,
    pub environment: Env,
    pub environment_files: Vec<String>,
    /// `User=` (empty: root).
    pub user: String,
}

pub const SHOW_PROPERTIES: &str = "LoadState,ActiveState,FragmentPath,DropInPaths,Environment,EnvironmentFiles";

/// `systemctl show UNIT` for `unit`: `None` where systemd is not there (no `systemctl`, or
/// not running as init).
pub fn systemd_unit(unit: &str) -> Option<Result<Unit, String>> {
    let out = std::process::Command::new("systemctl").args(["show", unit, "-p", SHOW_PROPERTIES]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.trim().is_empty() {
        let err = String::from_utf8_lossy(&out.stderr);
        if err.contains("not been booted with systemd") || err.contains("Failed to connect to bus") {
            return None;
        }
        return Some(Err(format!("systemctl show {unit}: {}", err.trim())));
    }
    Some(Ok(parse_show(&text)))
}

/// Parse `systemctl show` output (`Key=value` lines).
pub fn parse_show(text: &str) -> Unit {
    let mut u = Unit::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        match k {
            "LoadState" => u.load_state = v.to_string(),
            "ActiveState" => u.active_state = v.to_string(),
            "User" => u.user = v.to_string(),
            "FragmentPath" => u.fragment_path = v.to_string(),
            "DropInPaths" => u.drop_in_paths = v.split_whitespace().map(str::to_string).collect(),
            "Environment" => u.environment.extend(
                split_words(v).into_iter().filter_map(|kv| kv.split_once('=').map(|(a, b)| (a.into(), b.into()))),
            ),
            "EnvironmentFiles" => {
                // "path (ignore_errors=no)" entries
                u.environment_files.extend(v.split_whitespace().filter(|w| w.starts_with('/')).map(str::to_string))
            }
            _ => {}
        }
    }
    u
}

/// Split systemd's space-separated words, honouring `"..."`/`'...'` quoting and `\` escapes.
pub fn split_words(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (c, quote) {
            ('\\', _) => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                    in_word = true;
                }
            }
            ('"' | '\'', None) => {
                quote = Some(c);
                in_word = true;
            }
            (c, Some(q)) if c == q => quote = None,
            (c, None) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (c, _) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    out
}

/// A process for tests: `<proc_dir>/<pid>` with its `cmdline` and `environ` (NUL-separated,
/// as the kernel gives them).
#[cfg(test)]
pub(crate) fn fake_process(proc_dir: &std::path::Path, pid: u32, cmdline: &[u8], environ: &[u8]) -> std::path::PathBuf {
    let p = proc_dir.join(pid.to_string());
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(p.join("cmdline"), cmdline).unwrap();
    std::fs::write(p.join("environ"), environ).unwrap();
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_is_told_from_runners() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(is_ollama_serve(&v(&["/usr/local/bin/ollama", "serve"])));
        assert!(!is_ollama_serve(&v(&["/usr/local/bin/ollama", "run", "llama3"])));
        assert!(!is_ollama_serve(&v(&["/usr/local/lib/ollama/llama-server", "--port", "1"])));
        assert!(!is_ollama_serve(&v(&["bash", "-c", "ollama serve"])));
    }

    #[test]
    fn systemctl_show_is_parsed() {
        let u = parse_show(
            "LoadState=loaded\nActiveState=active\nFragmentPath=/etc/systemd/system/ollama.service\n\
             DropInPaths=/etc/systemd/system/ollama.service.d/vgpu.conf\n\
             Environment=PATH=/usr/bin \"OLLAMA_HOST=0.0.0.0 x\" VGPU_SERVER=tcp://gpu:7070\n\
             EnvironmentFiles=/etc/default/ollama (ignore_errors=yes)\n",
        );
        assert_eq!(u.load_state, "loaded");
        assert_eq!(u.environment["OLLAMA_HOST"], "0.0.0.0 x");
        assert_eq!(u.environment["VGPU_SERVER"], "tcp://gpu:7070");
        assert_eq!(u.drop_in_paths, ["/etc/systemd/system/ollama.service.d/vgpu.conf"]);
        assert_eq!(u.environment_files, ["/etc/default/ollama"]);
        assert_eq!(
            uid_of("ollama", "root:x:0:0::/root:/bin/sh\nollama:x:998:998::/usr/share/ollama:/bin/false\n"),
            Some(998)
        );
        assert_eq!(uid_of("1000", ""), Some(1000));
        assert_eq!(uid_of("nobody", ""), None);
    }

    #[test]
    fn fake_proc_is_scanned() {
        let t = tempfile::tempdir().unwrap();
        fake_process(
            t.path(),
            4242,
            b"/usr/bin/ollama\0serve\0",
            b"LD_LIBRARY_PATH=/opt/vgpu/lib\0VGPU_SERVER=unix:/s\0",
        );
        std::fs::create_dir(t.path().join("1")).unwrap();
        std::fs::write(t.path().join("1/cmdline"), b"/sbin/init\0").unwrap();
        let found = find_ollama_serve(t.path());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].pid, 4242);
        assert_eq!(found[0].env.as_ref().unwrap()["VGPU_SERVER"], "unix:/s");
        assert_eq!(found[0].started, None);
    }

    #[test]
    fn start_time_of_this_process_is_recent_and_past() {
        let me = Path::new("/proc/self");
        let Some(t) = start_time(Path::new("/proc"), me) else {
            return;
        };
        let age = SystemTime::now().duration_since(t).unwrap_or_default();
        assert!(age.as_secs() < 3600, "{age:?}");
    }
}
