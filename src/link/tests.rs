// SPDX-License-Identifier: Apache-2.0
//! Tests of a link over a real UNIX socket and a real store: backpressure, hang-ups and
//! bounded hook lanes, driven call by call with no poll loop.

use super::*;
use crate::config::Config;
use crate::kv::keeper::Keeper;
use crate::kv::{Origin, Store};
use std::io::Write;
use std::os::unix::net::UnixStream;

/// A link on a real UNIX socket with a host attached, and services over a real store
/// holding `params` params of 8 KB (each list-params answer is `params` × 8 KB).
struct Rig {
    dir: std::path::PathBuf,
    svc: Services,
    link: Link,
    host: Option<UnixStream>,
}

impl Rig {
    fn new(tag: &str, params: usize) -> Rig {
        let dir = std::env::temp_dir().join(format!("guestd-link-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let state = dir.join("state");
        let mut store = Store::open(&state, |_| None).unwrap();
        for i in 0..params {
            let value = "v".repeat(8000);
            store
                .set(&format!("k{i}"), &value, Origin::Guest, true, None)
                .unwrap();
        }
        drop(store);
        let root = crate::facts::fixtures().join("agent-root");
        let cfg = Config {
            root: root.clone(),
            hooks_dir: dir.join("hooks"),
            ..Config::default()
        };
        let mut svc = Services::new(cfg, Keeper::open(&state, |_| None).unwrap());
        let sock = dir.join("g.sock");
        let spec = ChannelSpec::UnixListen(sock.clone());
        let session = Box::new(crate::ovirt::Session::new(0));
        let mut link = Link::open(0, &spec, &root, session).unwrap();
        let host = UnixStream::connect(&sock).unwrap();
        link.on_listen(&mut svc);
        assert!(link.is_attached());
        Rig {
            dir,
            svc,
            link,
            host: Some(host),
        }
    }

    fn send(&mut self, text: &str) {
        self.host
            .as_mut()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }

    fn readable(&mut self, revents: i16) {
        let fd = self.link.channel.conn_fd().unwrap();
        self.link.on_conn(fd, revents, &mut self.svc);
    }

    fn stored(&self, key: &str) -> Option<String> {
        let store = self.svc.store.get().unwrap();
        store.get(key).map(|e| e.value.clone())
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn set_params(n: usize) -> String {
    (0..n)
        .map(|i| format!("{{\"__name__\":\"set-param\",\"key\":\"h{i}\",\"value\":\"x\"}}\n"))
        .collect()
}

const LIST: &str = "{\"__name__\":\"list-params\"}\n";

/// A host that hangs up while its link is throttled still has what it sent carried out:
/// the commands the queue held back are served, then the link detaches.
#[test]
fn a_host_that_hangs_up_while_throttled_still_has_its_commands_carried_out() {
    let mut rig = Rig::new("hup", 20);
    rig.send(&format!("{LIST}{LIST}{}", set_params(5)));
    rig.readable(POLLIN);
    assert!(rig.link.throttled(), "two 160 KB answers fill the queue");
    assert!(
        rig.link.framer.has_input(),
        "the set-params wait in the framer"
    );
    assert_eq!(rig.stored("h0"), None);
    rig.host = None;
    rig.readable(POLLIN | POLLHUP);
    assert!(
        !rig.link.is_attached(),
        "detached at the end of the host's input"
    );
    for i in 0..5 {
        assert_eq!(rig.stored(&format!("h{i}")).as_deref(), Some("x"));
    }
}

/// The same when the link learns of it from a write that fails (EPIPE) rather than from
/// poll: it stops writing and reads the host's input to its end.
#[test]
fn a_write_to_a_host_that_left_does_not_lose_its_last_commands() {
    let mut rig = Rig::new("epipe", 20);
    rig.send(&format!("{LIST}{LIST}{}", set_params(5)));
    rig.readable(POLLIN);
    assert!(rig.link.throttled());
    rig.host = None;
    rig.link.end_of_turn(&mut rig.svc);
    assert!(
        rig.link.is_attached() && rig.link.hung_up,
        "{}",
        rig.link.hung_up
    );
    assert_eq!(rig.link.conn_poll().map(|(_, ev)| ev), Some(POLLIN));
    rig.readable(POLLIN);
    assert!(!rig.link.is_attached());
    assert_eq!(rig.stored("h4").as_deref(), Some("x"));
}

/// Hook jobs that end at once (no hook installed) do not count against the lane's limit
/// while they wait to be handed on: a hundred set-params in one read are all stored.
#[test]
fn a_hundred_set_params_in_one_read_are_all_stored() {
    let mut rig = Rig::new("hundred", 0);
    rig.send(&set_params(100));
    rig.readable(POLLIN);
    for i in 0..100 {
        assert_eq!(rig.stored(&format!("h{i}")).as_deref(), Some("x"), "h{i}");
    }
}
