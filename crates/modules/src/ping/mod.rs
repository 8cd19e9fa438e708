//! XEP-0199 XMPP Ping: the server answers pings addressed to it. (The
//! server's own pings to quiet clients live in the c2s loop.)

use std::sync::Arc;

use async_trait::async_trait;
use jackdaw_core::hooks::{IqHandler, IqRequest, IqType};
use jackdaw_core::minidom::Element;
use jackdaw_core::server::Server;
use jackdaw_core::stanza::StanzaError;
use jackdaw_core::stream::ns;

use crate::ModuleContext;

pub const OPTIONS: &[&str] = &[];

pub fn init(ctx: &mut ModuleContext<'_>) -> Result<(), String> {
    ctx.hooks.add_feature(ns::PING);
    ctx.hooks.on_iq(ns::PING, IqType::Get, Arc::new(Ping));
    Ok(())
}

struct Ping;

#[async_trait]
impl IqHandler for Ping {
    async fn handle(&self, _: &Server, _: IqRequest<'_>) -> Result<Option<Element>, StanzaError> {
        Ok(None)
    }
}
