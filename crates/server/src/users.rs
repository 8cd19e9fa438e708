//! `jackdaw user add|passwd|del|list`: account administration through the
//! same Authenticator the server uses. Passwords come from a prompt or
//! stdin, never from argv (where `ps` would show them).

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;

use anyhow::{Context, Result, bail};
use jackdaw_core::auth::{AuthError, Authenticator};
use jackdaw_core::jid::BareJid;

use crate::UserCommand;
use crate::admin_socket::{self, Request};
use crate::wiring::Backends;

fn read_password(prompt: &str) -> Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("{prompt}: ");
        std::io::stderr().flush().ok();
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    if password.is_empty() {
        bail!("empty password");
    }
    Ok(password)
}

fn split(jid: &str) -> Result<(String, String)> {
    let bare = BareJid::new(jid).with_context(|| format!("{jid:?} is not a valid JID"))?;
    let node = bare
        .node()
        .with_context(|| format!("{jid:?} has no user part"))?
        .as_str()
        .to_string();
    Ok((node, bare.domain().as_str().to_string()))
}

fn auth_for<'a>(backends: &'a Backends, host: &str) -> Result<&'a dyn Authenticator> {
    backends
        .auth
        .get(host)
        .map(|a| a.as_ref())
        .with_context(|| format!("{host} is not a configured host"))
}

/// Tells a running server that an account changed, so it forgets a cached
/// password and, for a deleted account, ends its sessions.
async fn tell_running_server(data_path: &Path, host: &str, user: &str, deleted: bool) -> Result<()> {
    let request = Request::AccountChanged {
        host: host.to_string(),
        user: user.to_string(),
        deleted,
    };
    if let Some(reply) = admin_socket::ask(data_path, &request).await? {
        if reply.closed > 0 {
            println!("the running server closed {} session(s)", reply.closed);
        } else {
            println!("the running server was told");
        }
    }
    Ok(())
}

pub async fn run(cmd: UserCommand, backends: &Backends, data_path: &Path) -> Result<()> {
    match cmd {
        UserCommand::Add { jid } => {
            let (user, host) = split(&jid)?;
            let auth = auth_for(backends, &host)?;
            let password = read_password("Password")?;
            match auth.create_user(&host, &user, &password).await {
                Ok(()) => println!("created {user}@{host}"),
                Err(AuthError::Conflict) => bail!("{user}@{host} already exists"),
                Err(e) => return Err(e).context("creating the account"),
            }
        }
        UserCommand::Passwd { jid } => {
            let (user, host) = split(&jid)?;
            let auth = auth_for(backends, &host)?;
            let password = read_password("New password")?;
            auth.set_password(&host, &user, &password)
                .await
                .context("changing the password")?;
            println!("password changed for {user}@{host}");
            tell_running_server(data_path, &host, &user, false).await?;
        }
        UserCommand::Del { jid } => {
            let (user, host) = split(&jid)?;
            let auth = auth_for(backends, &host)?;
            auth.delete_user(&host, &user)
                .await
                .context("deleting the account")?;
            println!("deleted {user}@{host}");
            tell_running_server(data_path, &host, &user, true).await?;
        }
        UserCommand::List { host } => {
            let auth = auth_for(backends, &host)?;
            for user in auth.list_users(&host).await.context("listing accounts")? {
                println!("{user}@{host}");
            }
        }
    }
    Ok(())
}
