//! Everything the checks consult, built from one config and swapped as a whole at reload.
//!
//! A `Policy` is the validated config plus what is derived from it: the access-map index and the
//! resolver. Building one reads the access-map file, so a reload with a
//! broken map is refused exactly like a broken config, and sessions never see half of a change.

use std::sync::Arc;

use crate::checks::access::{AccessError, AccessMap, Tag};
use crate::checks::greywhitelist::GreyWhitelist;
use crate::config::{Config, ConfigError};
use crate::dns::Dns;
use crate::milter::negotiate::Needs;

/// The rules in force for a session.
pub struct Policy {
    pub config: Config,
    /// The access-map index; None when `access-map` is not set.
    pub access: Option<Arc<AccessMap>>,
    /// Warnings found while reading the access-map (duplicate keys), to log once.
    pub access_warnings: Vec<String>,
    /// postgrey-format greylisting exemptions; None when no file is configured.
    pub grey_whitelist: Option<Arc<GreyWhitelist>>,
    /// Lines of those files that were skipped, to log once.
    pub grey_whitelist_warnings: Vec<String>,
    pub dns: Dns,
    /// The query counters of this config's DNS lists, per option, made on first use so that
    /// counting a lookup is one atomic add per list.
    list_queries: std::sync::OnceLock<Vec<(&'static str, Vec<prometheus_client::metrics::counter::Counter>)>>,
}

/// Why a policy could not be built.
#[derive(Debug)]
pub enum PolicyError {
    Config(ConfigError),
    /// The access-map could not be read or parsed (names file, line and smtpf number).
    Access(AccessError),
    Dns(String),
    /// A greylisting whitelist file could not be read.
    GreyWhitelist(String),
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PolicyError::Config(e) => write!(f, "{e}"),
            PolicyError::Access(e) => write!(f, "access-map: {e}"),
            PolicyError::Dns(e) => write!(f, "dns-servers: {e}"),
            PolicyError::GreyWhitelist(e) => write!(f, "grey-whitelist: {e}"),
        }
    }
}

impl Policy {
    /// Builds the policy: loads the access-map and sets up the resolver.
    pub fn build(config: Config) -> Result<Policy, PolicyError> {
        let (access, access_warnings) = match &config.access_map {
            None => (None, Vec::new()),
            Some(path) => match AccessMap::load(path) {
                Ok((map, warnings)) => (Some(Arc::new(map)), warnings.iter().map(|w| w.to_string()).collect()),
                Err(e) => return Err(PolicyError::Access(e)),
            },
        };
        let (grey_whitelist, grey_whitelist_warnings) =
            if config.grey_whitelist_clients.is_empty() && config.grey_whitelist_recipients.is_empty() {
                (None, Vec::new())
            } else {
                let (list, warnings) = GreyWhitelist::load(&config.grey_whitelist_clients, &config.grey_whitelist_recipients)
                    .map_err(PolicyError::GreyWhitelist)?;
                (Some(Arc::new(list)), warnings)
            };
        let dns = Dns::new(&config.dns_servers, config.dns_timeout).map_err(PolicyError::Dns)?;
        Ok(Policy {
            access,
            access_warnings,
            grey_whitelist,
            grey_whitelist_warnings,
            dns,
            config,
            list_queries: Default::default(),
        })
    }

    /// The `result="queried"` counters of `option`'s lists (dns-bl, dns-wl, dns-gl, uri-bl,
    /// uri-dns-bl), one per list of this config.
    pub fn list_queries(
        &self,
        metrics: &crate::metrics::Metrics,
        option: &str,
    ) -> &[prometheus_client::metrics::counter::Counter] {
        let all = self.list_queries.get_or_init(|| {
            let c = &self.config;
            [
                ("dns-bl", &c.dns_bl),
                ("dns-wl", &c.dns_wl),
                ("dns-gl", &c.dns_gl),
                ("uri-bl", &c.uri_bl),
                ("uri-dns-bl", &c.uri_dns_bl),
            ]
            .into_iter()
            .map(|(option, zones)| (option, zones.iter().map(|z| metrics.list_counter(option, &z.name, "queried")).collect()))
            .collect()
        });
        all.iter().find(|(o, _)| *o == option).map(|(_, c)| c.as_slice()).unwrap_or(&[])
    }

    /// What the enabled checks need from the MTA: the steps some check may answer at (the MTA
    /// waits for a reply only there) and whether DATA is needed. Negotiation asks for exactly
    /// this, and `check-config` prints it, so an admin can see what each check costs in round
    /// trips.
    pub fn milter_needs(&self) -> Needs {
        let c = &self.config;
        let access = self.access.is_some();
        let delay = c.smtp_delay_checks;
        let lists = !c.dns_bl.is_empty();
        let greylisting = !c.grey_key.is_empty() && c.grey_temp_fail_period > 0;
        // IREJECT refuses at once even when the other refusals wait for RCPT.
        let ireject = |tag| self.access.as_ref().is_some_and(|m| m.may_ireject(tag));
        Needs {
            // Always read: #720 reports the size, and content checks digest it.
            body: true,
            reply_connect: (!delay && (access || lists)) || ireject(Tag::Connect),
            reply_helo: (!delay && access) || ireject(Tag::Helo),
            reply_mail: access || c.mail_require_mx,
            reply_rcpt: access || delay,
            reply_data: greylisting,
            data: greylisting,
        }
    }

    /// Whether any URI list is configured (the body must then be kept for scanning).
    pub fn scans_uris(&self) -> bool {
        self.config.scans_uris()
    }
}
