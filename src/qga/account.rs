// SPDX-License-Identifier: Apache-2.0
//! Accounts: guest-set-user-password (through `chpasswd`, run as a helper program that never
//! holds up the loop) and guest-ssh-get/add/remove-authorized-keys.
//!
//! Users are looked up in `<root>/etc/passwd`, parsed here: a static binary has no NSS, so
//! users that only LDAP or sssd know are not found. Programs (`chpasswd`) are looked for in
//! `<root>/usr/sbin`, `/sbin`, `/usr/bin` and `/bin`, and home directories are taken under
//! `<root>` (which is `/` outside tests).
//!
//! A password travels only on chpasswd's stdin: it is never logged (chpasswd's output quoted
//! in an error has it masked), never written to disk, and guestd's copies are overwritten
//! with zeros once used.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::commands::{Answer, Command, Ctx};
use super::exec::{TASK_TIMEOUT, errno_text, is_executable};
use super::wire::{Args, Error};
use crate::exec::{self, Spec};
use crate::facts;
use crate::proto::base64;

/// Where `chpasswd` is looked for, under the root.
const SBIN_DIRS: &[&str] = &["usr/sbin", "sbin", "usr/bin", "bin"];
/// The environment of helper programs.
const HELPER_ENV: [&str; 2] = [
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG=C",
];
/// The largest authorized_keys file read.
const MAX_KEYS_FILE: u64 = 1 << 20;

pub const COMMANDS: &[Command] = &[
    Command::new(
        "guest-set-user-password",
        &["username", "password", "crypted"],
        set_password,
    ),
    Command::new("guest-ssh-get-authorized-keys", &["username"], ssh_get),
    Command::new(
        "guest-ssh-add-authorized-keys",
        &["username", "keys", "reset"],
        ssh_add,
    ),
    Command::new(
        "guest-ssh-remove-authorized-keys",
        &["username", "keys"],
        ssh_remove,
    ),
];

/// `name` in the first of `dirs` under `root` that has it as an executable file.
pub fn find_under(root: &Path, dirs: &[&str], name: &str) -> Option<PathBuf> {
    dirs.iter()
        .map(|d| facts::under(root, d).join(name))
        .find(|p| is_executable(p))
}

/// The environment given to helper programs.
pub fn helper_env() -> Vec<String> {
    HELPER_ENV.iter().map(|e| (*e).to_owned()).collect()
}

/// The raw password, or why it cannot be set.
fn check_password(username: &str, encoded: &str) -> Result<Vec<u8>, Error> {
    let mut raw = base64::decode(encoded).map_err(|e| Error::generic(e.to_string()))?;
    if raw.iter().any(|&b| b == b'\n' || b == 0) {
        exec::wipe(&mut raw);
        return Err(Error::generic("forbidden characters in raw password"));
    }
    if username.is_empty() || username.contains(['\n', ':', '\0']) {
        exec::wipe(&mut raw);
        return Err(Error::generic("forbidden characters in username"));
    }
    Ok(raw)
}

fn set_password(cx: &mut Ctx<'_>, args: &Args<'_>) -> Answer {
    let (username, encoded, crypted) = match (|| {
        Ok::<_, Error>((
            args.str("username")?,
            args.str("password")?,
            args.bool("crypted")?,
        ))
    })() {
        Ok(v) => v,
        Err(e) => return Answer::Fail(e),
    };
    let mut raw = match check_password(username, encoded) {
        Ok(r) => r,
        Err(e) => return Answer::Fail(e),
    };
    let Some(program) = find_under(&cx.svc.cfg.root, SBIN_DIRS, "chpasswd") else {
        exec::wipe(&mut raw);
        return Answer::Fail(Error::generic(
            "chpasswd is not installed: cannot set passwords in this guest",
        ));
    };
    // One allocation of the final size, so no partial copy is left behind by a regrowth.
    let mut stdin = Vec::with_capacity(username.len() + raw.len() + 2);
    stdin.extend_from_slice(username.as_bytes());
    stdin.push(b':');
    stdin.extend_from_slice(&raw);
    stdin.push(b'\n');
    let spec = Spec {
        program,
        args: if crypted {
            vec!["-e".into()]
        } else {
            Vec::new()
        },
        env: helper_env(),
        cwd: Some(PathBuf::from("/")),
        stdin,
        limit: 4096,
        timeout: Some(TASK_TIMEOUT),
        ends: None,
        merge_stderr: false,
    };
    log::info!("guest-set-user-password: setting the password of '{username}'");
    let to = cx.requester();
    match cx.svc.execs.run_task(spec, to, "set user password", raw) {
        Ok(()) => Answer::Later,
        Err(e) => Answer::Fail(Error::generic(e)),
    }
}

/// A user's ids and home directory, from an `/etc/passwd` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// The entry of `name` in passwd(5) text.
pub fn parse_passwd(text: &str, name: &str) -> Option<User> {
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 || f[0] != name {
            return None;
        }
        Some(User {
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5].to_owned(),
        })
    })
}

fn lookup(root: &Path, name: &str) -> Result<User, Error> {
    let fail = || Error::generic(format!("failed to lookup user '{name}'"));
    let text = facts::read_text(root, "etc/passwd").map_err(|e| {
        log::warn!("looking up user '{name}': {e}");
        fail()
    })?;
    parse_passwd(&text, name).ok_or_else(fail)
}

/// A key is refused if it is empty, a comment, or more than one line (qemu-ga's check).
fn check_keys(keys: &[&str]) -> Result<(), Error> {
    match keys
        .iter()
        .find(|k| k.is_empty() || k.starts_with('#') || k.contains(['\n', '\r']))
    {
        Some(k) => Err(Error::generic(format!("invalid OpenSSH public key: '{k}'"))),
        None => Ok(()),
    }
}

/// `~/.ssh` and `~/.ssh/authorized_keys` of `user`, under the root.
fn key_paths(root: &Path, user: &User) -> (PathBuf, PathBuf) {
    let dir = facts::under(root, &user.home).join(".ssh");
    let file = dir.join("authorized_keys");
    (dir, file)
}

/// The lines of `path` (`file` in errors); `None` when it does not exist. `follow`: a
/// symbolic link at `path` is read through (for the host's own listing); otherwise it is
/// refused, since what is read is written back into a file the user owns.
fn read_lines(path: &Path, file: &Path, follow: bool) -> Result<Option<Vec<String>>, Error> {
    use std::io::Read;
    let fail = |e: io::Error| {
        Error::generic(format!(
            "failed to read '{}': {}",
            file.display(),
            errno_text(&e)
        ))
    };
    let flags = if follow { 0 } else { libc::O_NOFOLLOW };
    let f = match OpenOptions::new().read(true).custom_flags(flags).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(e)),
    };
    let mut text = String::new();
    f.take(MAX_KEYS_FILE)
        .read_to_string(&mut text)
        .map_err(fail)?;
    Ok(Some(text.lines().map(str::to_owned).collect()))
}

/// `~/.ssh` opened as a directory that is no symbolic link; `None` when it does not exist.
/// The user owns the home directory and could swap `.ssh` for a link at any time, so every
/// later path goes through this descriptor (`in_dir`), never through `dir` again.
fn open_dir(dir: &Path) -> Result<Option<File>, Error> {
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
    {
        Ok(d) => Ok(Some(d)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => Err(
            Error::generic(format!("'{}' is not a directory", dir.display())),
        ),
        Err(e) => Err(Error::generic(format!(
            "failed to open '{}': {}",
            dir.display(),
            errno_text(&e)
        ))),
    }
}

/// `name` inside the directory open as `d`, whatever its path has become since.
fn in_dir(d: &File, name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}/{name}", d.as_raw_fd()))
}

/// `~/.ssh` of `user`, made (0700, the user's) if missing.
fn make_dir(user: &User, dir: &Path) -> Result<File, Error> {
    if let Some(d) = open_dir(dir)? {
        return Ok(d);
    }
    let fail = |what: &str, e: io::Error| {
        Error::generic(format!("{what} '{}': {}", dir.display(), errno_text(&e)))
    };
    DirBuilder::new()
        .mode(0o700)
        .create(dir)
        .map_err(|e| fail("failed to create", e))?;
    let d =
        open_dir(dir)?.ok_or_else(|| fail("failed to create", io::ErrorKind::NotFound.into()))?;
    std::os::unix::fs::fchown(&d, Some(user.uid), Some(user.gid))
        .map_err(|e| fail("failed to set ownership of", e))?;
    d.set_permissions(fs::Permissions::from_mode(0o700))
        .map_err(|e| fail("failed to set permissions of", e))?;
    Ok(d)
}

/// Writes `lines` as `authorized_keys` of `user` in the directory open as `d` (shown as
/// `file`): a temporary file (0600, the user's) renamed over the old one, both reached
/// through the descriptor, so a user cannot point root's write elsewhere.
fn write_lines(user: &User, d: &File, file: &Path, lines: &[String]) -> Result<(), Error> {
    let tmp = in_dir(d, ".authorized_keys.guestd-tmp");
    let _ = fs::remove_file(&tmp);
    let mut text = lines.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        std::os::unix::fs::fchown(&f, Some(user.uid), Some(user.gid))?;
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        f.sync_all()?;
        fs::rename(&tmp, in_dir(d, "authorized_keys"))
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::generic(format!(
            "failed to write '{}': {}",
            file.display(),
            errno_text(&e)
        ))
    })
}

fn ssh_get(cx: &mut Ctx<'_>, args: &Args<'_>) -> Answer {
    let r = (|| {
        let name = args.str("username")?;
        let user = lookup(&cx.svc.cfg.root, name)?;
        let (_, file) = key_paths(&cx.svc.cfg.root, &user);
        let lines = read_lines(&file, &file, true)?.ok_or_else(|| {
            Error::generic(format!(
                "failed to read '{}': No such file or directory",
                file.display()
            ))
        })?;
        // qemu-ga lists them last first.
        let keys: Vec<Value> = (lines.iter().rev())
            .map(|l| l.trim())
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(Value::from)
            .collect();
        Ok(json!({ "keys": keys }))
    })();
    r.into()
}

fn ssh_add(cx: &mut Ctx<'_>, args: &Args<'_>) -> Answer {
    let r = (|| {
        let name = args.str("username")?;
        let keys = args.strings("keys")?;
        let reset = args.opt_bool("reset")?.unwrap_or(false);
        check_keys(&keys)?;
        let user = lookup(&cx.svc.cfg.root, name)?;
        let (dir, file) = key_paths(&cx.svc.cfg.root, &user);
        let d = make_dir(&user, &dir)?;
        let mut lines = if reset {
            Vec::new()
        } else {
            read_lines(&in_dir(&d, "authorized_keys"), &file, false)?.unwrap_or_default()
        };
        for k in keys {
            if !lines.iter().any(|l| l == k) {
                lines.push(k.to_owned());
            }
        }
        write_lines(&user, &d, &file, &lines)?;
        log::info!("guest-ssh-add-authorized-keys: updated {}", file.display());
        Ok(json!({}))
    })();
    r.into()
}

fn ssh_remove(cx: &mut Ctx<'_>, args: &Args<'_>) -> Answer {
    let r = (|| {
        let name = args.str("username")?;
        let keys = args.strings("keys")?;
        check_keys(&keys)?;
        let user = lookup(&cx.svc.cfg.root, name)?;
        let (dir, file) = key_paths(&cx.svc.cfg.root, &user);
        let Some(d) = open_dir(&dir)? else {
            return Ok(json!({}));
        };
        let Some(lines) = read_lines(&in_dir(&d, "authorized_keys"), &file, false)? else {
            return Ok(json!({}));
        };
        let kept: Vec<String> = (lines.iter())
            .filter(|l| !keys.contains(&l.as_str()))
            .cloned()
            .collect();
        if kept.len() != lines.len() {
            write_lines(&user, &d, &file, &kept)?;
            log::info!(
                "guest-ssh-remove-authorized-keys: updated {}",
                file.display()
            );
        }
        Ok(json!({}))
    })();
    r.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lines_give_ids_and_home() {
        let text = "root:x:0:0:root:/root:/bin/sh\nbob:x:1000:100:Bob:/home/bob:/bin/sh\nbad:x\n";
        assert_eq!(
            parse_passwd(text, "bob"),
            Some(User {
                uid: 1000,
                gid: 100,
                home: "/home/bob".into()
            })
        );
        assert_eq!(parse_passwd(text, "bo"), None);
        assert_eq!(parse_passwd(text, "bad"), None);
    }

    #[test]
    fn passwords_and_names_are_checked_as_qemu_does() {
        let b = |s: &str| base64::encode(s.as_bytes());
        assert_eq!(check_password("bob", &b("pw")).unwrap(), b"pw");
        let e = |u: &str, p: &str| check_password(u, p).unwrap_err().desc;
        assert_eq!(e("bob", &b("a\nb")), "forbidden characters in raw password");
        assert_eq!(e("b:ob", &b("pw")), "forbidden characters in username");
        assert_eq!(e("b\nob", &b("pw")), "forbidden characters in username");
        assert_eq!(e("bob", "!!"), "Base64 data is not valid");
    }

    #[test]
    fn keys_are_checked() {
        assert!(check_keys(&["ssh-ed25519 AAAA x@y"]).is_ok());
        for bad in ["", "# c", "a\nb"] {
            assert_eq!(
                check_keys(&["ok", bad]).unwrap_err().desc,
                format!("invalid OpenSSH public key: '{bad}'")
            );
        }
    }
}
