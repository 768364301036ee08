// SPDX-License-Identifier: Apache-2.0
//! How a hook program's end is reported: its `Outcome`, and the log text of its status and
//! captured output line by line, with the job's secrets masked and what was dropped counted.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use super::{Job, Outcome};
use crate::exec::{Captured, Output};
use crate::sys::ExitStatus;

/// Logs how a program that ran ended, with its output, and returns its outcome.
pub(super) fn concluded(sink: fn(&str), job: &Job, program: PathBuf, out: Output) -> Outcome {
    let result = if out.killed {
        Err(format!("killed after timeout ({})", secs(job.timeout)))
    } else {
        out.status.map_err(|e| format!("waitpid: {}", e.source))
    };
    conclude(sink, job, program, result, &out.stdout, &out.stderr)
}

/// Logs how `program` ended, with its output, and returns its outcome.
pub(super) fn conclude(
    sink: fn(&str),
    job: &Job,
    program: PathBuf,
    result: Result<ExitStatus, String>,
    out: &Captured,
    err: &Captured,
) -> Outcome {
    let name = program
        .file_name()
        .unwrap_or(program.as_os_str())
        .to_string_lossy();
    let name = format!("{}/{name}", job.label);
    sink(&render(&name, &result, out, err, &job.redact));
    Outcome {
        label: job.label.clone(),
        program,
        result,
    }
}

/// The report of one program: "<name>: <status>", then one line per output line.
pub(super) fn render(
    name: &str,
    result: &Result<ExitStatus, String>,
    out: &Captured,
    err: &Captured,
    secrets: &[Vec<u8>],
) -> String {
    let mut text = match result {
        Ok(st) => format!("{name}: {st}"),
        Err(e) => format!("{name}: {e}"),
    };
    for (stream, c) in [("stdout", out), ("stderr", err)] {
        let kept = secrets.iter().fold(c.bytes.clone(), |buf, s| {
            redact(&buf, c.dropped > 0, Some(s))
        });
        for line in String::from_utf8_lossy(&kept).lines() {
            let _ = write!(text, "\n{name} {stream}: {line}");
        }
        if c.dropped > 0 {
            let _ = write!(text, "\n{name} {stream}: [... {} bytes dropped]", c.dropped);
        }
    }
    text
}

/// `buf` with every `secret` replaced by "***"; when the output was cut short, a start of the
/// secret left at its very end is replaced too.
pub(super) fn redact(buf: &[u8], truncated: bool, secret: Option<&[u8]>) -> Vec<u8> {
    let Some(s) = secret.filter(|s| !s.is_empty()) else {
        return buf.to_vec();
    };
    let mut out = Vec::with_capacity(buf.len());
    let mut i = 0;
    while let Some(rest) = buf.get(i..).filter(|r| !r.is_empty()) {
        if rest.starts_with(s) {
            out.extend_from_slice(b"***");
            i += s.len();
        } else {
            out.push(rest[0]);
            i += 1;
        }
    }
    if let Some(k) = (1..s.len())
        .rev()
        .find(|&k| truncated && out.ends_with(&s[..k]))
    {
        out.truncate(out.len() - k);
        out.extend_from_slice(b"***");
    }
    out
}

/// A duration as the log shows it: "60s", or "300ms" when not whole seconds.
pub(super) fn secs(d: Duration) -> String {
    let ms = d.as_millis();
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Writes each line of a report to the log at info level.
pub(super) fn log_lines(text: &str) {
    for line in text.lines() {
        log::info!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn captured(text: &str, dropped: usize) -> Captured {
        Captured {
            bytes: text.as_bytes().to_vec(),
            dropped,
        }
    }

    #[test]
    fn statuses_and_output_lines() {
        use ExitStatus::{Code, Signal};
        let none = Captured::default();
        let r = |res, out: &Captured, err: &Captured| render("test/1", &res, out, err, &[]);
        assert_eq!(r(Ok(Code(0)), &none, &none), "test/1: exit status 0");
        assert_eq!(
            r(Ok(Code(3)), &captured("a\nb\n", 0), &captured("bad", 0)),
            "test/1: exit status 3\ntest/1 stdout: a\ntest/1 stdout: b\ntest/1 stderr: bad"
        );
        assert_eq!(r(Ok(Signal(9)), &none, &none), "test/1: killed by signal 9");
        let e = Err("killed after timeout (300ms)".to_owned());
        assert_eq!(
            r(e, &captured("x", 95905), &none),
            "test/1: killed after timeout (300ms)\ntest/1 stdout: x\n\
             test/1 stdout: [... 95905 bytes dropped]"
        );
        assert_eq!(secs(Duration::from_secs(60)), "60s");
        assert_eq!(secs(Duration::from_millis(300)), "300ms");
    }

    #[test]
    fn secrets_are_masked() {
        let secret = [b"s3cret".to_vec()];
        let text = render(
            "t/p",
            &Ok(ExitStatus::Code(0)),
            &captured("line s3cret\n", 0),
            &captured("pw=s3cret!", 0),
            &secret,
        );
        assert_eq!(
            text,
            "t/p: exit status 0\nt/p stdout: line ***\nt/p stderr: pw=***!"
        );
        // A secret cut by the bound leaves no prefix of itself in the log.
        let cut = captured(&format!("{}s3c", "x".repeat(4093)), 3);
        let none = Captured::default();
        let text = render("t/p", &Ok(ExitStatus::Code(0)), &cut, &none, &secret);
        assert!(text.contains("xx***\nt/p stdout: [... 3 bytes dropped]") && !text.contains("s3c"));
        assert_eq!(redact(b"s3s3cret", false, Some(b"s3cret")), b"s3***");
        assert_eq!(redact(b"abc", true, None), b"abc");
    }
}
