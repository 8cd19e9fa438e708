//! Jackdaw's feature modules, one folder each, as Prosody's are one file
//! each. A module's `init` reads its options, adds its disco features and
//! registers its hooks on the host; it never reaches into another module.

pub mod auth_http;
pub mod blocklist;
pub mod carbons;
pub mod cloud_notify;
pub mod component_http;
pub mod disco;
pub mod http_oauth2;
pub mod mam;
pub mod muc;
pub mod muc_http_auth;
pub mod offline;
pub mod ping;
pub mod presence;
pub mod register;
pub mod roster;
pub mod roster_http;
pub mod version;

use jackdaw_core::config::{HostConfig, KnownOptions};
use jackdaw_core::hooks::Hooks;
use jackdaw_core::metrics::Metrics;
use jackdaw_core::storage::Stores;

/// What a module gets at load time.
pub struct ModuleContext<'a> {
    pub host: &'a HostConfig,
    pub hooks: &'a mut Hooks,
    pub stores: &'a Stores,
    pub metrics: &'a Metrics,
}

type InitFn = fn(&mut ModuleContext<'_>) -> Result<(), String>;

/// Every module: its `modules_enabled` name, whether it loads without being
/// listed, its options, and its init function.
const MODULES: &[(&str, bool, &[&str], InitFn)] = &[
    ("roster", true, roster::OPTIONS, roster::init),
    ("presence", true, presence::OPTIONS, presence::init),
    ("disco", true, disco::OPTIONS, disco::init),
    ("offline", true, offline::OPTIONS, offline::init),
    ("ping", true, ping::OPTIONS, ping::init),
    ("version", true, version::OPTIONS, version::init),
    ("register", true, register::OPTIONS, register::init),
    ("blocklist", true, blocklist::OPTIONS, blocklist::init),
    // mam before carbons: the archive id of a sent message travels in its
    // <sent/> carbon (message filters run in load order).
    ("mam", true, mam::OPTIONS, mam::init),
    ("carbons", true, carbons::OPTIONS, carbons::init),
    ("cloud_notify", true, cloud_notify::OPTIONS, cloud_notify::init),
    ("http_oauth2", false, http_oauth2::OPTIONS, http_oauth2::init),
    (
        "http_roster_admin",
        false,
        roster_http::OPTIONS,
        roster_http::init,
    ),
];

/// Option names of every module, for the config key check.
pub fn known_options() -> KnownOptions {
    KnownOptions {
        host: MODULES
            .iter()
            .flat_map(|(_, _, opts, _)| opts.iter().copied())
            .chain(auth_http::OPTIONS.iter().copied())
            .collect(),
        component: component_http::OPTIONS
            .iter()
            .chain(muc::OPTIONS)
            .chain(muc_http_auth::OPTIONS)
            .copied()
            .collect(),
    }
}

/// Loads the host's modules: the defaults, plus `modules_enabled`, minus
/// `modules_disabled`. Returns every problem (unknown names, bad options).
pub fn load_host(
    host: &HostConfig,
    hooks: &mut Hooks,
    stores: &Stores,
    metrics: &Metrics,
) -> Result<Vec<&'static str>, Vec<String>> {
    let mut problems = Vec::new();
    for name in host.modules_enabled.iter().chain(&host.modules_disabled) {
        if !MODULES.iter().any(|(n, ..)| n == name) {
            problems.push(format!("host {}: unknown module \"{name}\"", host.name));
        }
    }
    let mut loaded = Vec::new();
    let mut ctx = ModuleContext {
        host,
        hooks,
        stores,
        metrics,
    };
    for (name, default, _, init) in MODULES {
        let wanted = (*default || host.modules_enabled.iter().any(|m| m == name))
            && !host.modules_disabled.iter().any(|m| m == name);
        if wanted {
            match init(&mut ctx) {
                Ok(()) => loaded.push(*name),
                Err(e) => problems.push(format!("host {}: module {name}: {e}", host.name)),
            }
        }
    }
    if problems.is_empty() {
        Ok(loaded)
    } else {
        Err(problems)
    }
}
