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

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
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

/// The lines of `file`; `None` when it does not exist.
fn read_lines(file: &Path) -> Result<Option<Vec<String>>, Error> {
    use std::io::Read;
    let fail = |e: io::Error| {
        Error::generic(format!(
            "failed to read '{}': {}",
            file.display(),
            errno_text(&e)
        ))
    };
    let f = match fs::File::open(file) {
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

/// Writes `lines` as `file` of `user`: `dir` made (0700, the user's) if missing, then a
/// temporary file (0600, the user's) renamed over the old one. Symbolic links in the way are
/// refused, so a user cannot point root's write elsewhere.
fn write_lines(user: &User, dir: &Path, file: &Path, lines: &[String]) -> Result<(), Error> {
    let fail = |what: &str, p: &Path, e: io::Error| {
        Error::generic(format!("{what} '{}': {}", p.display(), errno_text(&e)))
    };
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Error::generic(format!(
                "'{}' is not a directory",
                dir.display()
            )));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .map_err(|e| fail("failed to create", dir, e))?;
            std::os::unix::fs::chown(dir, Some(user.uid), Some(user.gid))
                .map_err(|e| fail("failed to set ownership of", dir, e))?;
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| fail("failed to set permissions of", dir, e))?;
        }
        Err(e) => return Err(fail("failed to look at", dir, e)),
    }
    let tmp = dir.join(".authorized_keys.guestd-tmp");
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
        fs::rename(&tmp, file)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        fail("failed to write", file, e)
    })
}

fn ssh_get(cx: &mut Ctx<'_>, args: &Args<'_>) -> Answer {
    let r = (|| {
        let name = args.str("username")?;
        let user = lookup(&cx.svc.cfg.root, name)?;
        let (_, file) = key_paths(&cx.svc.cfg.root, &user);
        let lines = read_lines(&file)?.ok_or_else(|| {
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
        let mut lines = if reset {
            Vec::new()
        } else {
            read_lines(&file)?.unwrap_or_default()
        };
        for k in keys {
            if !lines.iter().any(|l| l == k) {
                lines.push(k.to_owned());
            }
        }
        write_lines(&user, &dir, &file, &lines)?;
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
        let Some(lines) = read_lines(&file)? else {
            return Ok(json!({}));
        };
        let kept: Vec<String> = (lines.iter())
            .filter(|l| !keys.contains(&l.as_str()))
            .cloned()
            .collect();
        if kept.len() != lines.len() {
            write_lines(&user, &dir, &file, &kept)?;
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
