//! The client configuration: named contexts, each a Kubernaut server and how to get a
//! token for it, as kubectl's kubeconfig has them.
//!
//! ```yaml
//! current-context: staging
//! contexts:
//!   staging:
//!     server: https://kubernaut.staging.example.com
//!     token-file: ~/.config/kubernaut/staging.token
//!   production:
//!     server: https://kubernaut.example.com
//!     token-command: vault read -field=token secret/kubernaut/production
//! ```
//!
//! Read from `--config` / `KUBERNAUT_CONFIG`, else `$XDG_CONFIG_HOME/kubernaut/config.yaml`
//! (`~/.config/kubernaut/config.yaml`). Flags and `KUBERNAUT_URL` / `KUBERNAUT_TOKEN`
//! win over the context; the server's own settings are never read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::cli::CliError;
use crate::cli::args::{ClientCommand, ServerArgs, Token};

/// The client configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ClientConfig {
    /// The context used when neither `--context` nor `KUBERNAUT_CONTEXT` names one.
    #[serde(default)]
    pub current_context: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

/// One Kubernaut server and where its token comes from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Context {
    pub server: String,
    /// A file holding the token (surrounding whitespace ignored; `~/` is the home).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// A shell command printing the token on standard output (run with `sh -c`).
    #[serde(default)]
    pub token_command: Option<String>,
}

/// Where the configuration is looked for when `--config` and `KUBERNAUT_CONFIG` are
/// unset: `$XDG_CONFIG_HOME/kubernaut/config.yaml`, else under `~/.config`.
fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| home().map(|home| home.join(".config")))?;
    Some(base.join("kubernaut").join("config.yaml"))
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// `~/x` under the home folder; anything else as written.
fn expand_home(path: &Path) -> PathBuf {
    match (path.strip_prefix("~"), home()) {
        (Ok(rest), Some(home)) => home.join(rest),
        _ => path.to_path_buf(),
    }
}

/// Reads the configuration at `path`: a file named explicitly must exist; the
/// default one may be missing (no contexts then).
fn load(explicit: Option<&Path>) -> Result<(Option<PathBuf>, ClientConfig), CliError> {
    let (path, required) = match explicit {
        Some(path) => (path.to_path_buf(), true),
        None => match default_path() {
            Some(path) => (path, false),
            None => return Ok((None, ClientConfig::default())),
        },
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if !required && error.kind() == std::io::ErrorKind::NotFound => {
            return Ok((None, ClientConfig::default()));
        }
        Err(error) => {
            return Err(CliError::Usage(format!(
                "cannot read the client configuration {}: {error}",
                path.display()
            )));
        }
    };
    let config = parse(&text).map_err(|error| {
        CliError::Usage(format!(
            "the client configuration {} is not valid: {error}",
            path.display()
        ))
    })?;
    Ok((Some(path), config))
}

fn parse(text: &str) -> Result<ClientConfig, String> {
    if text.trim().is_empty() {
        return Ok(ClientConfig::default());
    }
    serde_saphyr::from_str(text).map_err(|e| e.to_string())
}

/// Fills the command's server and token from the chosen context, where the flags and
/// the environment left them unset.
///
/// # Errors
/// [`CliError::Usage`] for a configuration that cannot be read, a context that does
/// not exist, or a token that cannot be read.
pub fn resolve(
    command: &ClientCommand,
    server: &mut ServerArgs,
    explicit: Option<&Path>,
) -> Result<(), CliError> {
    if !command.talks_to_a_server() {
        return Ok(());
    }
    let (path, config) = load(explicit)?;
    apply(server, &config, path.as_deref())
}

fn apply(
    server: &mut ServerArgs,
    config: &ClientConfig,
    path: Option<&Path>,
) -> Result<(), CliError> {
    let name = server
        .context
        .clone()
        .filter(|c| !c.is_empty())
        .or_else(|| config.current_context.clone());
    let Some(name) = name else {
        return Ok(());
    };
    let Some(context) = config.contexts.get(&name) else {
        let known: Vec<&str> = config.contexts.keys().map(String::as_str).collect();
        let place = path.map_or_else(
            || "no client configuration was found".to_owned(),
            |p| {
                format!(
                    "{} has {}",
                    p.display(),
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                )
            },
        );
        return Err(CliError::Usage(format!("no context {name:?}: {place}")));
    };
    if server.url.is_none() {
        server.url = Some(context.server.clone());
    }
    if server.token.is_none() {
        server.token = token_of(&name, context)?;
    }
    Ok(())
}

fn token_of(name: &str, context: &Context) -> Result<Option<Token>, CliError> {
    if let Some(file) = &context.token_file {
        let path = expand_home(file);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            CliError::Usage(format!(
                "context {name}: cannot read its token-file {}: {e}",
                path.display()
            ))
        })?;
        return Ok(Some(Token::from(text.trim().to_owned())));
    }
    if let Some(command) = &context.token_command {
        let output = std::process::Command::new("sh")
            .args(["-c", command])
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .output()
            .map_err(|e| {
                CliError::Usage(format!("context {name}: cannot run its token-command: {e}"))
            })?;
        if !output.status.success() {
            return Err(CliError::Usage(format!(
                "context {name}: its token-command failed ({})",
                output.status
            )));
        }
        let text = String::from_utf8(output.stdout).map_err(|_| {
            CliError::Usage(format!(
                "context {name}: its token-command printed no UTF-8 text"
            ))
        })?;
        return Ok(Some(Token::from(text.trim().to_owned())));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_are_read_with_their_server_and_token_source() {
        let config = parse(
            "current-context: staging\ncontexts:\n  staging:\n    server: https://s.example\n    token-file: /tmp/t\n  prod:\n    server: https://p.example\n    token-command: echo x\n",
        )
        .expect("a valid configuration");
        assert_eq!(config.current_context.as_deref(), Some("staging"));
        assert_eq!(config.contexts["prod"].server, "https://p.example");
        assert_eq!(
            config.contexts["prod"].token_command.as_deref(),
            Some("echo x")
        );
        assert_eq!(
            config.contexts["staging"].token_file,
            Some(PathBuf::from("/tmp/t"))
        );
    }

    #[test]
    fn an_unknown_field_is_refused_naming_it() {
        let error =
            parse("contexts:\n  a:\n    server: x\n    tokenfile: y\n").expect_err("refused");
        assert!(error.contains("tokenfile"), "{error}");
    }

    #[test]
    fn the_url_and_token_given_win_over_the_context() {
        let config = parse("current-context: a\ncontexts:\n  a:\n    server: https://a.example\n    token-command: echo from-context\n").expect("valid");
        let mut server = ServerArgs {
            url: Some("https://flag.example".to_owned()),
            token: None,
            context: None,
            output: crate::cli::OutputFormat::Table,
            retry_budget: std::time::Duration::ZERO,
        };
        apply(&mut server, &config, None).expect("applied");
        assert_eq!(server.url(), "https://flag.example");
        assert_eq!(
            server.token.as_ref().map(Token::expose),
            Some("from-context")
        );
    }

    #[test]
    fn a_context_that_does_not_exist_is_bad_usage_listing_those_that_do() {
        let config = parse("contexts:\n  a:\n    server: https://a.example\n").expect("valid");
        let mut server = ServerArgs {
            url: None,
            token: None,
            context: Some("b".to_owned()),
            output: crate::cli::OutputFormat::Table,
            retry_budget: std::time::Duration::ZERO,
        };
        let error = apply(&mut server, &config, Some(Path::new("/c.yaml"))).expect_err("no b");
        assert_eq!(error.exit_code(), 2);
        assert!(format!("{error:?}").contains("/c.yaml has a"), "{error:?}");
    }
}
