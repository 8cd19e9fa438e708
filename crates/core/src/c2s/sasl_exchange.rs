//! The SASL exchange on a client stream (RFC 6120 §6.4): `<auth/>`, any
//! number of `<challenge/>`/`<response/>`, then `<success/>` or
//! `<failure/>`. Backend outages answer `temporary-auth-failure`, never
//! `not-authorized`, so users are not told a good password is wrong.

use minidom::Element;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{Connection, End};
use crate::auth::AuthError;
use crate::sasl::scram::ScramServer;
use crate::sasl::{self, Mechanism, SaslError, oauthbearer, plain};
use crate::stream::{StreamEvent, ns};

impl Connection {
    /// Runs one SASL exchange; Ok(true) once authenticated.
    pub(super) async fn sasl(&mut self, auth: &Element, deadline: Instant) -> Result<bool, End> {
        let secure = self.io().is_tls();
        let offered = self.mechanisms(secure);
        let ip = self.peer.ip();
        let mechanism = match auth.attr("mechanism").and_then(Mechanism::from_name) {
            Some(m) if offered.contains(&m) => m,
            Some(Mechanism::Plain) if !secure => {
                return self.sasl_failure(SaslError::EncryptionRequired, None).await;
            }
            _ => return self.sasl_failure(SaslError::InvalidMechanism, None).await,
        };
        let server = self.server.clone();
        let Some(attempt) = server.auth_limiter.begin(ip) else {
            warn!(
                mechanism = mechanism.name(),
                "login refused: too many failed attempts from this address"
            );
            return self
                .sasl_failure(
                    SaslError::TemporaryAuthFailure,
                    Some("Too many failed attempts; try again later"),
                )
                .await;
        };
        let initial = match sasl::decode_base64(&auth.text()) {
            Ok(d) => d,
            Err(e) => return self.sasl_failure(e, None).await,
        };
        let outcome = if mechanism == Mechanism::Plain {
            self.sasl_plain(&initial).await
        } else if mechanism == Mechanism::OAuthBearer {
            self.sasl_oauthbearer(&initial, deadline).await?
        } else {
            self.sasl_scram(mechanism, &initial, &offered, deadline).await?
        };
        match outcome {
            Ok((user, additional)) => {
                attempt.succeeded();
                info!(user = %user, mechanism = mechanism.name(), "authenticated");
                let data = additional.map(|d| sasl::encode_base64(&d)).unwrap_or_default();
                self.write(&format!("<success xmlns='{}'>{data}</success>", ns::SASL))
                    .await?;
                self.user = Some(user);
                Ok(true)
            }
            Err(e) => {
                if matches!(e, SaslError::NotAuthorized) {
                    attempt.failed();
                    info!(mechanism = mechanism.name(), "authentication failed");
                }
                self.sasl_failure(e, None).await
            }
        }
    }

    async fn sasl_failure(&mut self, e: SaslError, text: Option<&str>) -> Result<bool, End> {
        let text = text
            .map(|t| format!("<text xml:lang='en'>{t}</text>"))
            .unwrap_or_default();
        self.write(&format!(
            "<failure xmlns='{}'><{}/>{text}</failure>",
            ns::SASL,
            e.condition()
        ))
        .await?;
        Ok(false)
    }

    /// Normalises the SASL username into a JID localpart, checking the
    /// optional authzid names the same account.
    fn account_for(&self, username: &str, authzid: Option<&str>) -> Result<String, SaslError> {
        let host = self.host.clone().unwrap_or_default();
        let bare = jid::BareJid::new(&format!("{username}@{host}")).map_err(|_| SaslError::NotAuthorized)?;
        let node = bare
            .node()
            .map(|n| n.as_str().to_string())
            .ok_or(SaslError::NotAuthorized)?;
        if let Some(authzid) = authzid.filter(|a| !a.is_empty()) {
            match jid::BareJid::new(authzid) {
                Ok(j) if j == bare => {}
                _ => return Err(SaslError::InvalidAuthzid),
            }
        }
        Ok(node)
    }

    async fn sasl_plain(&mut self, initial: &[u8]) -> Result<(String, Option<Vec<u8>>), SaslError> {
        let creds = plain::parse(initial)?;
        let user = self.account_for(&creds.authcid, creds.authzid.as_deref())?;
        let host = self.host.clone().unwrap_or_default();
        let auth = self.host_ref().auth.clone();
        match auth.check_password(&host, &user, &creds.password).await {
            Ok(true) => Ok((user, None)),
            Ok(false) => Err(SaslError::NotAuthorized),
            Err(e) => Err(backend_failure(e)),
        }
    }

    /// RFC 7628: the token must carry the `xmpp` scope; a refusal goes
    /// through the error challenge the client must acknowledge.
    async fn sasl_oauthbearer(
        &mut self,
        initial: &[u8],
        deadline: Instant,
    ) -> Result<Result<(String, Option<Vec<u8>>), SaslError>, End> {
        let creds = match oauthbearer::parse(initial) {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        let host = self.host.clone().unwrap_or_default();
        let Some(verifier) = self.host_ref().hooks.token_verifier().cloned() else {
            return Ok(Err(SaslError::InvalidMechanism));
        };
        let server = self.server.clone();
        let refusal = match verifier.verify(&server, &host, &creds.token).await {
            Ok(Ok(login)) => {
                // The authzid, when given, must name the token's account.
                match self.account_for(&login.user, creds.authzid.as_deref()) {
                    Ok(user) if user == login.user => {
                        self.token_login = Some(login);
                        return Ok(Ok((user, None)));
                    }
                    Ok(_) => return Ok(Err(SaslError::InvalidAuthzid)),
                    Err(e) => return Ok(Err(e)),
                }
            }
            Ok(Err(refusal)) => refusal,
            Err(e) => return Ok(Err(backend_failure(e))),
        };
        info!(status = refusal.status(), "OAUTHBEARER token refused");
        // Where to get a token, when the server knows its public URL.
        let discovery = self
            .server
            .config
            .global
            .http_external_url
            .as_deref()
            .map(|base| format!("{}/.well-known/openid-configuration", base.trim_end_matches('/')));
        let challenge =
            oauthbearer::error_challenge(refusal.status(), verifier.required_scope(), discovery.as_deref());
        self.write(&format!(
            "<challenge xmlns='{}'>{}</challenge>",
            ns::SASL,
            sasl::encode_base64(&challenge)
        ))
        .await?;
        // §3.2.2: the client answers the error with a lone %x01 (or
        // aborts); either way the exchange fails.
        match self.next_event(Some(deadline)).await? {
            StreamEvent::Stanza(el) if el.is("response", ns::SASL) => {
                let ack = sasl::decode_base64(&el.text()).unwrap_or_default();
                if !oauthbearer::is_error_acknowledgement(&ack) {
                    debug!("OAUTHBEARER: the client did not acknowledge the error as RFC 7628 asks");
                }
                Ok(Err(SaslError::NotAuthorized))
            }
            StreamEvent::Stanza(el) if el.is("abort", ns::SASL) => Ok(Err(SaslError::Aborted)),
            StreamEvent::End => Err(End::Closed),
            _ => Err(self.stream_error(crate::stream::StreamError::NotAuthorized).await),
        }
    }

    async fn sasl_scram(
        &mut self,
        mechanism: Mechanism,
        initial: &[u8],
        offered: &[Mechanism],
        deadline: Instant,
    ) -> Result<Result<(String, Option<Vec<u8>>), SaslError>, End> {
        let plus_offered = offered.iter().any(|m| m.is_plus());
        let bindings = self.bindings.clone().unwrap_or_default();
        let mut scram = ScramServer::new(mechanism, bindings, plus_offered);
        let first = match scram.client_first(initial) {
            Ok(f) => f,
            Err(e) => return Ok(Err(e)),
        };
        let user = match self.account_for(&first.username, first.authzid.as_deref()) {
            Ok(u) => u,
            Err(e) => return Ok(Err(e)),
        };
        let host = self.host.clone().unwrap_or_default();
        let auth = self.host_ref().auth.clone();
        // Invariant: SCRAM mechanisms always have a hash.
        let hash = mechanism.hash().expect("SCRAM mechanism has a hash");
        let challenge = match auth.scram_credentials(&host, &user, hash).await {
            Ok(Some(creds)) => scram.server_first(&creds),
            Ok(None) => scram.server_first_unknown_user(),
            Err(e) => return Ok(Err(backend_failure(e))),
        };
        self.write(&format!(
            "<challenge xmlns='{}'>{}</challenge>",
            ns::SASL,
            sasl::encode_base64(&challenge)
        ))
        .await?;
        let response = match self.next_event(Some(deadline)).await? {
            StreamEvent::Stanza(el) if el.is("response", ns::SASL) => el,
            StreamEvent::Stanza(el) if el.is("abort", ns::SASL) => return Ok(Err(SaslError::Aborted)),
            StreamEvent::End => return Err(End::Closed),
            _ => return Err(self.stream_error(crate::stream::StreamError::NotAuthorized).await),
        };
        let data = match sasl::decode_base64(&response.text()) {
            Ok(d) => d,
            Err(e) => return Ok(Err(e)),
        };
        Ok(scram
            .client_final(&data)
            .map(|server_final| (user, Some(server_final))))
    }
}

fn backend_failure(e: AuthError) -> SaslError {
    match e {
        AuthError::Unavailable(detail) => {
            // The backend warns once per outage; this is per login.
            debug!(error = %detail, "authentication backend unavailable");
            SaslError::TemporaryAuthFailure
        }
        _ => SaslError::NotAuthorized,
    }
}
