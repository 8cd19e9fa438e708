//! XEP-0092 Software Version. Option `hide_os_type` (Prosody's name)
//! leaves the operating system out of the answer.

use std::sync::Arc;

use async_trait::async_trait;
use jackdaw_core::hooks::{IqHandler, IqRequest, IqType};
use jackdaw_core::minidom::Element;
use jackdaw_core::server::Server;
use jackdaw_core::stanza::StanzaError;
use jackdaw_core::stream::ns;
use serde::Deserialize;

use crate::ModuleContext;

pub const OPTIONS: &[&str] = &["hide_os_type"];

#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    hide_os_type: bool,
}

pub fn init(ctx: &mut ModuleContext<'_>) -> Result<(), String> {
    let config: Config = ctx.host.module_config()?;
    // Built once at load, as Prosody's mod_version does.
    let mut query = Element::bare("query", ns::VERSION);
    for (name, value) in [("name", "Jackdaw"), ("version", env!("CARGO_PKG_VERSION"))] {
        let mut el = Element::bare(name, ns::VERSION);
        el.append_text(value);
        query.append_child(el);
    }
    if !config.hide_os_type {
        let mut os = Element::bare("os", ns::VERSION);
        os.append_text(std::env::consts::OS);
        query.append_child(os);
    }
    ctx.hooks.add_feature(ns::VERSION);
    ctx.hooks
        .on_iq(ns::VERSION, IqType::Get, Arc::new(Version { query }));
    Ok(())
}

struct Version {
    query: Element,
}

#[async_trait]
impl IqHandler for Version {
    async fn handle(&self, _: &Server, req: IqRequest<'_>) -> Result<Option<Element>, StanzaError> {
        if !req.is_to_host() {
            return Err(StanzaError::service_unavailable());
        }
        Ok(Some(self.query.clone()))
    }
}
