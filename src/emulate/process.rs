//! Runs an emulator bounded by a timeout, capturing its serial console (from stdout or
//! from a file the emulator writes), echoing it as it arrives, and stopping the whole
//! process group when a verdict line appears or the timeout passes. Never hangs.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::verdict::{Ending, Patterns};

/// Where the emulator's serial console goes.
pub enum Serial {
    /// The emulator's stdout (QEMU `-serial stdio`).
    Stdout,
    /// A file the emulator writes (Bochs `com1: mode=file`).
    File(PathBuf),
}

/// One emulator run: the command, where its console is, and its bounds.
pub struct Run<'a> {
    /// The emulator command, ready to spawn.
    pub command: Command,
    /// Where its serial console is read from.
    pub serial: Serial,
    /// How long the guest may run before it is stopped.
    pub timeout: Duration,
    /// How long the emulator may keep running after a verdict line (to drain the UART
    /// and power off) before it is stopped.
    pub grace: Duration,
    /// The console lines that end the run with a verdict.
    pub patterns: &'a Patterns,
    /// Echo the console to stdout as it arrives.
    pub echo: bool,
    /// A file the command writes its real emulator's pid into (a process under a
    /// pseudo-terminal leads its own session, out of reach of our process group).
    pub pid_file: Option<PathBuf>,
    /// The emulator's log file (QEMU `-D`, Bochs `log:`), read after the run.
    pub log: Option<PathBuf>,
}

/// What a run produced.
pub struct Outcome {
    /// The serial console, as read.
    pub serial: String,
    /// How the run ended (the emulator exited, was stopped after a verdict line, or timed out).
    pub ending: Ending,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// The emulator's stderr.
    pub stderr: String,
    /// The lines of the emulator's log that carry a verdict
    /// ([`super::verdict::EMULATOR_LOG_SIGNALS`]).
    pub log: String,
}

/// Runs `run` to completion. `Err` only when the command cannot be started.
pub fn run(mut run: Run<'_>) -> std::io::Result<Outcome> {
    let piped = matches!(run.serial, Serial::Stdout);
    run.command
        .stdin(Stdio::null())
        .stdout(if piped { Stdio::piped() } else { Stdio::null() })
        .stderr(Stdio::piped());
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        run.command.process_group(0);
    }
    let started = Instant::now();
    let mut child = run.command.spawn()?;
    let buffer = Arc::new(Mutex::new(Vec::<u8>::new()));
    let stdout_reader = child.stdout.take().map(|mut pipe| {
        let buffer = Arc::clone(&buffer);
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                if let Ok(mut b) = buffer.lock() {
                    b.extend_from_slice(&chunk[..n]);
                }
            }
        })
    });
    let stderr_reader = child.stderr.take().map(|mut pipe| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    });

    let read_serial = |serial: &Serial| -> Vec<u8> {
        match serial {
            Serial::Stdout => buffer.lock().map(|b| b.clone()).unwrap_or_default(),
            Serial::File(path) => std::fs::read(path).unwrap_or_default(),
        }
    };
    let mut echoed = 0usize;
    let mut verdict_at: Option<Instant> = None;
    let ending = loop {
        let exited = child.try_wait().ok().flatten();
        let bytes = read_serial(&run.serial);
        if run.echo {
            echo_lines(&bytes, &mut echoed, false);
        }
        if verdict_at.is_none() && run.patterns.decided(&String::from_utf8_lossy(&bytes)) {
            verdict_at = Some(Instant::now());
        }
        if let Some(status) = exited {
            break Ending::Exited(status.code());
        }
        if verdict_at.is_some_and(|t| t.elapsed() >= run.grace) {
            kill(&mut child, run.pid_file.as_ref());
            break Ending::StoppedAfterVerdict;
        }
        if started.elapsed() >= run.timeout {
            kill(&mut child, run.pid_file.as_ref());
            break Ending::TimedOut;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // A pseudo-terminal's session may outlive its `script` parent: end it too.
    if let Some(pid) = run.pid_file.as_ref().and_then(read_pid) {
        signal_group(pid);
    }
    if let Some(reader) = stdout_reader {
        let _ = reader.join();
    }
    let stderr = stderr_reader
        .and_then(|r| r.join().ok())
        .unwrap_or_default();
    let bytes = read_serial(&run.serial);
    if run.echo {
        echo_lines(&bytes, &mut echoed, true);
    }
    Ok(Outcome {
        serial: String::from_utf8_lossy(&bytes).into_owned(),
        ending,
        elapsed: started.elapsed(),
        stderr,
        log: run.log.as_deref().map(signal_lines).unwrap_or_default(),
    })
}

/// The lines of the log at `path` that carry a verdict (empty when it is unreadable).
fn signal_lines(path: &std::path::Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter(|l| {
            super::verdict::EMULATOR_LOG_SIGNALS
                .iter()
                .any(|p| l.contains(p))
        })
        .fold(String::new(), |mut out, l| {
            out.push_str(l);
            out.push('\n');
            out
        })
}

/// Prints the complete lines of `bytes` after `echoed` (all of it when `flush`).
fn echo_lines(bytes: &[u8], echoed: &mut usize, flush: bool) {
    if *echoed >= bytes.len() {
        return;
    }
    let new = &bytes[*echoed..];
    let end = if flush {
        new.len()
    } else {
        match new.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None => return,
        }
    };
    let text = String::from_utf8_lossy(&new[..end]).replace('\r', "");
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    if flush && !text.ends_with('\n') && !text.is_empty() {
        let _ = out.write_all(b"\n");
    }
    let _ = out.flush();
    *echoed += end;
}

fn read_pid(path: &PathBuf) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn signal_group(pid: i32) {
    #[cfg(unix)]
    if pid > 0 {
        // SAFETY: kill(2) with a process-group id and a signal number has no memory
        // effects; a stale id fails with ESRCH, which is ignored.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// Kills the child's process group (and the recorded emulator's) and reaps the child.
fn kill(child: &mut Child, pid_file: Option<&PathBuf>) {
    if let Some(pid) = pid_file.and_then(read_pid) {
        signal_group(pid);
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        signal_group(pid);
    }
    let _ = child.kill();
    let _ = child.wait();
}
