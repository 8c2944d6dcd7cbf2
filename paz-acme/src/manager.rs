//! [`CertManager`]: keeps a certificate for every public host name of the services, from the
//! ACME CA, in the store (so replicas share them), renewed well before expiry, with backoff
//! after failures, and dropped when the name goes; tells the router what to serve.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use paz_core::engine::Certificate;
use paz_core::{HumanDuration, Paz};
use tokio::sync::watch;

use crate::{AcmeConfig, ChallengeKind, Challenges, Issuer};

/// How a name's certificate is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertState {
    /// Served; expires then.
    Valid {
        /// When it expires.
        not_after: jiff::Timestamp,
    },
    /// The last attempt failed; the next one waits.
    Failed {
        /// Why, as the CA said.
        error: String,
        /// Failures in a row.
        attempts: u32,
        /// When it is tried again.
        next_attempt: jiff::Timestamp,
    },
}

/// Settings of [`CertManager`].
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// The CA.
    pub acme: AcmeConfig,
    /// How the CA validates the names (default HTTP-01).
    pub challenge: ChallengeKind,
    /// Renew when a certificate expires within this (default 30 days).
    pub renew_before: Duration,
    /// How often names are checked (default 10 s; changes of services wake it at once).
    pub every: Duration,
    /// The first wait after a failure, doubled each time up to an hour (default 1 min).
    pub backoff: Duration,
    /// Names wanted besides the services' (e.g. the API's own host name).
    pub extra_names: Vec<String>,
}

impl ManagerConfig {
    /// Defaults for `acme`.
    pub fn new(acme: AcmeConfig) -> Self {
        ManagerConfig {
            acme,
            challenge: ChallengeKind::default(),
            renew_before: Duration::from_secs(30 * 24 * 3600),
            every: Duration::from_secs(10),
            backoff: Duration::from_secs(60),
            extra_names: Vec::new(),
        }
    }
}

/// Receives the whole set of certificates to serve, whenever it changes.
pub type Publish = Arc<dyn Fn(&[Certificate]) + Send + Sync>;

/// Keeps certificates for the services' public names. Cheap to clone.
#[derive(Clone)]
pub struct CertManager {
    inner: Arc<Inner>,
}

struct Inner {
    paz: Paz,
    config: ManagerConfig,
    challenges: Arc<dyn Challenges>,
    publish: Publish,
    states: Mutex<BTreeMap<String, CertState>>,
}

impl CertManager {
    /// A manager over the engine's services and store.
    pub fn new(
        paz: Paz,
        config: ManagerConfig,
        challenges: Arc<dyn Challenges>,
        publish: Publish,
    ) -> Self {
        CertManager {
            inner: Arc::new(Inner {
                paz,
                config,
                challenges,
                publish,
                states: Mutex::new(BTreeMap::new()),
            }),
        }
    }

    fn states(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, CertState>> {
        self.inner.states.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How each wanted name is doing.
    pub fn states_now(&self) -> BTreeMap<String, CertState> {
        self.states().clone()
    }

    /// What people should know about the certificates of `names` (failures), for
    /// `paz status`.
    pub fn problems(&self, names: &[String]) -> Vec<String> {
        let states = self.states();
        let now = jiff::Timestamp::now();
        names
            .iter()
            .filter_map(|name| match states.get(name) {
                Some(CertState::Failed {
                    error,
                    attempts,
                    next_attempt,
                }) => {
                    let wait = next_attempt.duration_since(now).as_secs().max(0) as u64;
                    Some(format!(
                        "certificate for {name}: {attempts} attempts failed, last: {error}; next attempt in {}",
                        HumanDuration::from_secs(wait)
                    ))
                }
                _ => None,
            })
            .collect()
    }

    /// The public names the services want certificates for.
    async fn wanted(&self) -> paz_core::Result<BTreeSet<String>> {
        let domain = self.inner.paz.config().domain.clone();
        let services = self.inner.paz.services().await?;
        Ok(services
            .iter()
            .flat_map(|s| {
                let default = s.spec.public.then(|| format!("{}.{domain}", s.spec.name));
                default.into_iter().chain(s.spec.domains.iter().cloned())
            })
            .chain(self.inner.config.extra_names.iter().cloned())
            .collect())
    }

    /// Runs until `shutdown`: serves what the store has at once, then keeps it current.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut events = self.inner.paz.subscribe();
        let mut issuer: Option<Issuer> = None;
        let mut published: Option<Vec<(String, String)>> = None;
        loop {
            if let Err(error) = self.pass(&mut issuer, &mut published).await {
                tracing::warn!(%error, "certificate pass failed; trying again soon");
            }
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(self.inner.config.every) => {}
                _ = events.recv() => {}
            }
        }
    }

    /// One pass: issue or renew what is due, drop what is no longer wanted, publish.
    pub async fn pass(
        &self,
        issuer: &mut Option<Issuer>,
        published: &mut Option<Vec<(String, String)>>,
    ) -> paz_core::Result<()> {
        let paz = &self.inner.paz;
        let config = &self.inner.config;
        let wanted = self.wanted().await?;
        let mut stored: BTreeMap<String, Certificate> = paz
            .certificates()
            .await?
            .into_iter()
            .map(|c| (c.name.clone(), c))
            .collect();
        for gone in stored
            .keys()
            .filter(|n| !wanted.contains(*n))
            .cloned()
            .collect::<Vec<_>>()
        {
            tracing::info!(name = %gone, "no service uses the name any more: certificate dropped");
            paz.delete_certificate(&gone).await?;
            stored.remove(&gone);
        }
        self.states().retain(|name, _| wanted.contains(name));
        // What the store has is served at once; each new certificate as soon as it is issued
        // (not after the orders of every other name).
        self.publish_if_changed(&stored, published);
        let now = jiff::Timestamp::now();
        let renew_before = jiff::SignedDuration::try_from(config.renew_before).unwrap_or_default();
        for name in &wanted {
            let due = stored.get(name).is_none_or(|c| {
                c.not_after
                    .checked_sub(renew_before)
                    .is_ok_and(|at| at <= now)
            });
            let waiting = matches!(
                self.states().get(name),
                Some(CertState::Failed { next_attempt, .. }) if *next_attempt > now
            );
            if !due || waiting {
                if let Some(certificate) = stored.get(name) {
                    self.states()
                        .entry(name.clone())
                        .or_insert(CertState::Valid {
                            not_after: certificate.not_after,
                        });
                }
                continue;
            }
            match self.issue(issuer, name).await {
                Ok(certificate) => {
                    tracing::info!(%name, not_after = %certificate.not_after, "certificate issued");
                    paz.put_certificate(&certificate).await?;
                    self.states().insert(
                        name.clone(),
                        CertState::Valid {
                            not_after: certificate.not_after,
                        },
                    );
                    stored.insert(name.clone(), certificate);
                    self.publish_if_changed(&stored, published);
                }
                Err(error) => {
                    let attempts = match self.states().get(name) {
                        Some(CertState::Failed { attempts, .. }) => attempts + 1,
                        _ => 1,
                    };
                    let wait = backoff(config.backoff, attempts);
                    tracing::warn!(%name, %error, attempts, ?wait, "certificate not issued; retrying later");
                    let next_attempt = now
                        .checked_add(jiff::SignedDuration::try_from(wait).unwrap_or_default())
                        .unwrap_or(now);
                    self.states().insert(
                        name.clone(),
                        CertState::Failed {
                            error: error.to_string(),
                            attempts,
                            next_attempt,
                        },
                    );
                }
            }
        }
        self.publish_if_changed(&stored, published);
        Ok(())
    }

    /// Hands `stored` to the router unless it serves exactly that already.
    fn publish_if_changed(
        &self,
        stored: &BTreeMap<String, Certificate>,
        published: &mut Option<Vec<(String, String)>>,
    ) {
        let serving: Vec<(String, String)> = stored
            .values()
            .map(|c| (c.name.clone(), c.chain_pem.clone()))
            .collect();
        if published.as_ref() != Some(&serving) {
            let certificates: Vec<Certificate> = stored.values().cloned().collect();
            (self.inner.publish)(&certificates);
            *published = Some(serving);
        }
    }

    async fn issue(&self, issuer: &mut Option<Issuer>, name: &str) -> Result<Certificate, String> {
        let paz = &self.inner.paz;
        let acme = &self.inner.config.acme;
        if issuer.is_none() {
            let kept = paz
                .acme_account(&acme.directory)
                .await
                .map_err(|e| e.to_string())?;
            let (connected, credentials) = Issuer::connect(acme, kept.as_deref())
                .await
                .map_err(|e| e.to_string())?;
            if kept.as_deref() != Some(credentials.as_str()) {
                paz.put_acme_account(&acme.directory, &credentials)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            *issuer = Some(connected);
        }
        let issuer = issuer.as_ref().expect("connected above");
        let issued = issuer
            .issue(
                &[name.to_owned()],
                self.inner.config.challenge,
                self.inner.challenges.as_ref(),
            )
            .await
            .map_err(|e| e.to_string())?;
        Ok(Certificate {
            name: name.to_owned(),
            chain_pem: issued.chain_pem,
            key_pem: issued.key_pem,
            not_after: issued.not_after,
            issued_at: jiff::Timestamp::now(),
        })
    }
}

/// The wait after `attempts` failures in a row: `first`, doubled each time, at most an hour.
pub fn backoff(first: Duration, attempts: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempts.saturating_sub(1).min(16));
    first.saturating_mul(factor).min(Duration::from_secs(3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        let first = Duration::from_secs(60);
        assert_eq!(backoff(first, 1), first);
        assert_eq!(backoff(first, 2), Duration::from_secs(120));
        assert_eq!(backoff(first, 5), Duration::from_secs(960));
        assert_eq!(backoff(first, 50), Duration::from_secs(3600));
    }
}
