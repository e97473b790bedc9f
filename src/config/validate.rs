//! The checks that need more than one value, made once the whole file is read: serde
//! checks each value while reading it (with its line and column), and [`Config::validate`]
//! what only makes sense together (a route's tuning is its keys over `defaults`).

use super::{Config, ConfigError, Tuning};

impl Config {
    /// Checks what single values cannot show: every route's effective tuning (its keys
    /// over `defaults`) and `defaults` itself. `origin` names the file in the error.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let rule = |message: String| ConfigError::Rule {
            origin: origin.to_string(),
            message,
        };
        if self.limits.max_pending_connections == 0 {
            return Err(rule(
                "limits.max_pending_connections: 0 would never accept a connection; expected \
                 at least 1 (default 10000)"
                    .into(),
            ));
        }
        for l in &self.listeners {
            if l.tls.is_none() && l.alpn.is_some() {
                return Err(rule(format!(
                    "listener {}: `alpn` needs `tls` (a plain listener speaks HTTP/1.1 only)",
                    l.bind
                )));
            }
            if l.tls.is_none() && l.client_auth.is_some() {
                return Err(rule(format!(
                    "listener {}: `client_auth` needs `tls` (client certificates are a TLS feature)",
                    l.bind
                )));
            }
        }
        if let Some(admin) = &self.admin
            && admin.token_file.is_some()
            && admin.token_env.is_some()
        {
            return Err(rule(
                "admin: expected one of `token_file` and `token_env`, not both".into(),
            ));
        }
        self.http2.check().map_err(rule)?;
        self.dns.check().map_err(rule)?;
        check_tuning(&self.defaults).map_err(|why| rule(format!("defaults: {why}")))?;
        for route in &self.routes {
            check_tuning(&route.tuning.apply(&self.defaults))
                .map_err(|why| rule(format!("route `{}`: {why}", route.name)))?;
        }
        Ok(())
    }
}

/// The rules a tuning must follow whatever it came from.
fn check_tuning(tuning: &Tuning) -> Result<(), String> {
    if !tuning.ping_interval.is_zero() && tuning.ping_timeout.is_zero() {
        return Err(format!(
            "ping_timeout 0s with ping_interval {} would close every connection after {} \
             without traffic; expected ping_timeout above 0 (like 10s), or ping_interval: 0s \
             to turn pings off",
            humantime::format_duration(tuning.ping_interval),
            humantime::format_duration(tuning.ping_interval),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_zero_ping_timeout_is_only_refused_while_pings_are_on() {
        let mut tuning = Tuning {
            ping_timeout: Duration::ZERO,
            ..Tuning::default()
        };
        let err = check_tuning(&tuning).unwrap_err();
        assert!(err.contains("ping_interval 20s"), "{err}");
        tuning.ping_interval = Duration::ZERO;
        assert_eq!(check_tuning(&tuning), Ok(()));
    }
}
