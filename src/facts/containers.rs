// SPDX-License-Identifier: Apache-2.0
//! Containers of the guest's container engines, read from their state directories: no daemon
//! is asked (the reference agent asks Docker's socket) and no database is opened.
//!
//! - **Docker**: `var/lib/docker/containers/<id>/config.v2.json`, the daemon's own record of
//!   each container: `ID`, `Name`, `Path` and `Args`, `Config.Image`, `Created` and `State`.
//!   The fields are mapped as Docker's `GET /containers/json?all=true` maps them, so the
//!   `status` is Docker's own text (`Up 2 hours (healthy)`, `Exited (0) 3 days ago`,
//!   `Created`).
//! - **Podman**: libpod keeps its state in a BoltDB or SQLite database, which guestd does not
//!   read. The containers/storage list `var/lib/containers/storage/overlay-containers/
//!   containers.json` names every container (`id`, `names`, `created`, and the image name in
//!   its `metadata`); the command is `process.args` of the container's OCI runtime
//!   configuration `.../<id>/userdata/config.json`. The state is `Up` while the container's
//!   `conmon` (`run/containers/storage/overlay-containers/<id>/userdata/conmon.pid`) lives,
//!   `Exited` when that pid file names a process that is gone, and `Created` without one
//!   (`/run` is emptied at boot); no times or exit codes.
//!
//! Bounded: at most `MAX_CONTAINERS` containers, state files of at most `MAX_STATE_FILE`
//! bytes, commands cut at `MAX_COMMAND` bytes. A container whose files cannot be read or
//! parsed is left out (logged at debug); a missing engine is an empty list.

use std::io::{self, Read};
use std::path::Path;

use serde_json::Value;

use super::{Error, calendar, under};

/// Most containers listed.
pub const MAX_CONTAINERS: usize = 256;
/// Largest state file read (`config.v2.json`, `containers.json`, `config.json`).
pub const MAX_STATE_FILE: u64 = 4 * 1024 * 1024;
/// Longest command reported, in bytes (cut at a character boundary).
pub const MAX_COMMAND: usize = 1024;

const DOCKER: &str = "var/lib/docker/containers";
const PODMAN: &str = "var/lib/containers/storage/overlay-containers";
const PODMAN_RUN: &str = "run/containers/storage/overlay-containers";

/// One container, with the fields of Docker's container list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// The full container id.
    pub id: String,
    /// Its names, each with a leading `/` as Docker's API gives them.
    pub names: Vec<String>,
    /// The image as the container was created from it (`nginx:latest`).
    pub image: String,
    /// The program and its arguments, arguments with spaces in single quotes.
    pub command: String,
    /// The state in words, as `docker ps` shows it.
    pub status: String,
    /// Creation time, Unix seconds (for the order: newest first).
    pub created: i64,
}

/// Reads a file of at most `MAX_STATE_FILE` bytes as JSON. `Ok(None)` when it is missing.
fn read_json(path: &Path) -> Result<Option<Value>, Error> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    let mut buf = Vec::new();
    file.take(MAX_STATE_FILE + 1)
        .read_to_end(&mut buf)
        .map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
    let parse = |reason: String| Error::Parse {
        path: path.to_owned(),
        reason,
    };
    if buf.len() as u64 > MAX_STATE_FILE {
        return Err(parse(format!("larger than {MAX_STATE_FILE} bytes")));
    }
    serde_json::from_slice(&buf)
        .map(Some)
        .map_err(|e| parse(e.to_string()))
}

/// Every container of Docker and Podman under `root`, newest first, at most
/// `MAX_CONTAINERS`. `now` (Unix seconds) is the time the Docker states are worded against.
/// Missing engines give an empty list; an engine directory that cannot be listed is an error.
pub fn read_containers(root: &Path, now: i64) -> Result<Vec<Container>, Error> {
    let mut list = read_docker(root, now)?;
    list.extend(read_podman(root)?);
    list.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
    list.truncate(MAX_CONTAINERS);
    Ok(list)
}

/// Logs a container left out.
fn skipped(e: &Error) {
    log::debug!("container left out: {e}");
}

fn read_docker(root: &Path, now: i64) -> Result<Vec<Container>, Error> {
    let dir = under(root, DOCKER);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(Error::Read { path: dir, source }),
    };
    let mut out = Vec::new();
    for entry in entries.flatten().take(MAX_CONTAINERS) {
        let path = entry.path().join("config.v2.json");
        match read_json(&path) {
            Ok(Some(v)) => match docker_container(&v, now) {
                Some(c) => out.push(c),
                None => log::debug!("container left out: {}: no ID", path.display()),
            },
            Ok(None) => {}
            Err(e) => skipped(&e),
        }
    }
    Ok(out)
}

/// One Docker container from its `config.v2.json`, mapped as Docker's list API maps it.
pub fn docker_container(v: &Value, now: i64) -> Option<Container> {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let id = v.get("ID")?.as_str()?.to_owned();
    let args: Vec<String> = v["Args"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).map(quote_arg).collect())
        .unwrap_or_default();
    let mut command = s(&v["Path"]);
    for a in args {
        command.push(' ');
        command.push_str(&a);
    }
    Some(Container {
        id,
        names: v["Name"]
            .as_str()
            .map(|n| vec![n.to_owned()])
            .unwrap_or_default(),
        image: s(&v["Config"]["Image"]),
        command: cut(command, MAX_COMMAND),
        status: docker_status(&v["State"], now),
        created: v["Created"].as_str().and_then(parse_time).unwrap_or(0),
    })
}

/// An argument as Docker's list shows it: in single quotes when it holds a space.
fn quote_arg(a: &str) -> String {
    if a.contains(' ') {
        format!("'{a}'")
    } else {
        a.to_owned()
    }
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Docker's words for a container state (its `State.String()`), worded against `now`.
pub fn docker_status(st: &Value, now: i64) -> String {
    let flag = |k: &str| st[k].as_bool().unwrap_or(false);
    let time = |k: &str| st[k].as_str().and_then(parse_time);
    let ago = |k: &str| human_duration(now - time(k).unwrap_or(now));
    let code = st["ExitCode"].as_i64().unwrap_or(0);
    if flag("Running") {
        if flag("Paused") {
            return format!("Up {} (Paused)", ago("StartedAt"));
        }
        if flag("Restarting") {
            return format!("Restarting ({code}) {} ago", ago("FinishedAt"));
        }
        return match st["Health"]["Status"].as_str() {
            Some("starting") => format!("Up {} (health: starting)", ago("StartedAt")),
            Some(h) if !h.is_empty() => format!("Up {} ({h})", ago("StartedAt")),
            _ => format!("Up {}", ago("StartedAt")),
        };
    }
    if flag("RemovalInProgress") {
        return "Removal In Progress".into();
    }
    if flag("Dead") {
        return "Dead".into();
    }
    if time("StartedAt").is_none() {
        return "Created".into();
    }
    if time("FinishedAt").is_none() {
        return String::new();
    }
    format!("Exited ({code}) {} ago", ago("FinishedAt"))
}

/// A duration in Docker's words (go-units `HumanDuration`).
pub fn human_duration(secs: i64) -> String {
    let minutes = secs / 60;
    // Hours are rounded to the nearest, as go-units does.
    let hours = (secs + 1800) / 3600;
    match secs {
        s if s < 1 => "Less than a second".into(),
        1 => "1 second".into(),
        s if s < 60 => format!("{s} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", secs / 3600 / 24 / 365),
    }
}

/// Unix seconds of an RFC 3339 time (`2024-05-01T10:00:00.123456789Z`, `...+02:00`); `None`
/// for Go's zero time (year 1), which Docker writes for "never", and for malformed text.
pub fn parse_time(t: &str) -> Option<i64> {
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let s = t.get(r)?;
        s.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, m, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if year <= 1 || t.get(4..5)? != "-" || !matches!(t.get(10..11)?, "T" | "t" | " ") {
        return None;
    }
    let rest = t.get(19..)?;
    let zone = rest.trim_start_matches(|c: char| c == '.' || c.is_ascii_digit());
    let offset = match zone {
        "Z" | "z" => 0,
        _ => {
            let sign = match zone.get(0..1)? {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            let hh: i64 = zone.get(1..3)?.parse().ok()?;
            let mm: i64 = zone.get(4..6)?.parse().ok()?;
            sign * (hh * 3600 + mm * 60)
        }
    };
    Some(calendar::days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s - offset)
}

fn read_podman(root: &Path) -> Result<Vec<Container>, Error> {
    let list_path = under(root, PODMAN).join("containers.json");
    let Some(list) = read_json(&list_path)? else {
        return Ok(Vec::new());
    };
    let Some(list) = list.as_array() else {
        return Err(Error::Parse {
            path: list_path,
            reason: "not a JSON array".into(),
        });
    };
    let mut out = Vec::new();
    for c in list.iter().take(MAX_CONTAINERS) {
        let Some(id) = c["id"].as_str().filter(|id| is_id(id)) else {
            continue;
        };
        // The metadata is a JSON document inside a string.
        let meta: Value = c["metadata"]
            .as_str()
            .and_then(|m| serde_json::from_str(m).ok())
            .unwrap_or_default();
        let spec_path = under(root, PODMAN).join(format!("{id}/userdata/config.json"));
        let command = match read_json(&spec_path) {
            Ok(spec) => spec
                .and_then(|s| {
                    let args = s["process"]["args"].as_array()?.clone();
                    Some(
                        args.iter()
                            .filter_map(Value::as_str)
                            .collect::<Vec<_>>()
                            .join(" "),
                    )
                })
                .unwrap_or_default(),
            Err(e) => {
                skipped(&e);
                continue;
            }
        };
        let names = c["names"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(|n| format!("/{n}"))
                    .collect()
            })
            .unwrap_or_default();
        out.push(Container {
            id: id.to_owned(),
            names,
            image: meta["image-name"].as_str().unwrap_or_default().to_owned(),
            command: cut(command, MAX_COMMAND),
            status: podman_status(root, id).into(),
            created: c["created"].as_str().and_then(parse_time).unwrap_or(0),
        });
    }
    Ok(out)
}

/// A container id as containers/storage makes them: hexadecimal (never a path).
fn is_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `Up` while the container's conmon lives, `Exited` when it is gone, `Created` when it never
/// ran since boot.
fn podman_status(root: &Path, id: &str) -> &'static str {
    let pidfile = under(root, PODMAN_RUN).join(format!("{id}/userdata/conmon.pid"));
    let Ok(text) = std::fs::read_to_string(&pidfile) else {
        return "Created";
    };
    match text.trim().parse::<u32>() {
        Ok(pid) if pid > 0 && under(root, &format!("proc/{pid}")).is_dir() => "Up",
        _ => "Exited",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::fixtures;
    use serde_json::json;

    /// 2024-05-01T12:00:00Z.
    const NOW: i64 = 1_714_564_800;

    #[test]
    fn times_parse_as_rfc3339_and_go_zero_is_never() {
        assert_eq!(parse_time("2024-05-01T12:00:00Z"), Some(NOW));
        assert_eq!(parse_time("2024-05-01T12:00:00.123456789Z"), Some(NOW));
        assert_eq!(parse_time("2024-05-01T14:00:00+02:00"), Some(NOW));
        assert_eq!(parse_time("2024-05-01T11:30:00.5-00:30"), Some(NOW));
        assert_eq!(parse_time("0001-01-01T00:00:00Z"), None);
        assert_eq!(parse_time("2024-05-01"), None);
        assert_eq!(parse_time("2024-05-01T12:00:00"), None);
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn durations_in_dockers_words() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(1), "1 second");
        assert_eq!(human_duration(59), "59 seconds");
        assert_eq!(human_duration(60), "About a minute");
        assert_eq!(human_duration(150), "2 minutes");
        assert_eq!(human_duration(3599), "59 minutes");
        assert_eq!(human_duration(3600), "About an hour");
        assert_eq!(human_duration(2 * 3600), "2 hours");
        assert_eq!(human_duration(47 * 3600), "47 hours");
        assert_eq!(human_duration(3 * 86_400), "3 days");
        assert_eq!(human_duration(20 * 86_400), "2 weeks");
        assert_eq!(human_duration(90 * 86_400), "3 months");
        assert_eq!(human_duration(3 * 365 * 86_400), "3 years");
    }

    #[test]
    fn docker_states_in_dockers_words() {
        let st = |v: Value| docker_status(&v, NOW);
        let zero = "0001-01-01T00:00:00Z";
        let hour_ago = "2024-05-01T11:00:00Z";
        assert_eq!(
            st(json!({"Running": true, "StartedAt": "2024-05-01T10:00:00Z"})),
            "Up 2 hours"
        );
        assert_eq!(
            st(json!({"Running": true, "StartedAt": hour_ago, "Health": {"Status": "healthy"}})),
            "Up About an hour (healthy)"
        );
        assert_eq!(
            st(json!({"Running": true, "StartedAt": hour_ago, "Health": {"Status": "starting"}})),
            "Up About an hour (health: starting)"
        );
        assert_eq!(
            st(json!({"Running": true, "Paused": true, "StartedAt": hour_ago})),
            "Up About an hour (Paused)"
        );
        assert_eq!(
            st(
                json!({"Running": true, "Restarting": true, "ExitCode": 1, "FinishedAt": "2024-05-01T11:59:30Z"})
            ),
            "Restarting (1) 30 seconds ago"
        );
        assert_eq!(
            st(
                json!({"Running": false, "ExitCode": 137, "StartedAt": hour_ago, "FinishedAt": "2024-04-28T12:00:00Z"})
            ),
            "Exited (137) 3 days ago"
        );
        assert_eq!(
            st(json!({"StartedAt": zero, "FinishedAt": zero})),
            "Created"
        );
        assert_eq!(st(json!({"Dead": true, "StartedAt": hour_ago})), "Dead");
        assert_eq!(
            st(json!({"RemovalInProgress": true})),
            "Removal In Progress"
        );
    }

    #[test]
    fn docker_and_podman_containers_from_their_state_directories() {
        let got = read_containers(&fixtures().join("containers"), NOW).unwrap();
        let ids: Vec<&str> = got.iter().map(|c| &c.id[..6]).collect();
        // Newest first; the directory without config.v2.json and the broken file are left
        // out, and so is the podman entry whose id is not hexadecimal.
        assert_eq!(ids, ["c0ffee", "bee5a1", "f00d01", "d0c4e2", "d0c4e1"]);
        let web = &got[4];
        assert_eq!(web.names, ["/web"]);
        assert_eq!(web.image, "nginx:latest");
        assert_eq!(web.command, "/docker-entrypoint.sh nginx -g 'daemon off;'");
        assert_eq!(web.status, "Up 2 hours (healthy)");
        assert_eq!(got[3].status, "Exited (0) 3 days ago");
        assert_eq!(got[3].command, "/bin/sh");
        let db = &got[2];
        assert_eq!(db.names, ["/db"]);
        assert_eq!(db.image, "docker.io/library/postgres:16");
        assert_eq!(db.command, "postgres -c max_connections=50");
        assert_eq!(db.status, "Up", "its conmon is alive in the fixture's proc");
        assert_eq!(got[1].status, "Exited", "its conmon is gone");
        assert_eq!(got[0].status, "Created", "no conmon pid file since boot");
        assert_eq!(got[0].command, "", "no OCI configuration yet");
    }

    #[test]
    fn no_engine_no_containers() {
        let got = read_containers(&fixtures().join("no-such-root"), NOW).unwrap();
        assert!(got.is_empty());
    }

    #[test]
    fn long_commands_are_cut_at_a_character_boundary() {
        let v = json!({"ID": "ab", "Path": "é".repeat(MAX_COMMAND)});
        let c = docker_container(&v, NOW).unwrap();
        assert_eq!(c.command.len(), MAX_COMMAND);
        assert!(docker_container(&json!({"Path": "x"}), NOW).is_none());
    }
}
