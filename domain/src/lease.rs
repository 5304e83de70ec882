//! Who drives a deployment: leases, their fencing numbers and the replicas that hold
//! them.
//!
//! Every active deployment is driven by one Kubernaut replica at a time, the holder of
//! its lease. A lease has an owner, an expiry (renewed by the owner's heartbeat) and a
//! [`Fence`]: a number that grows with every acquisition. Every write a driver makes
//! carries its fence, and the storage refuses it unless that fence is still the
//! deployment's current one, so a driver that was paused, partitioned or outlived its
//! lease changes nothing once another replica took over.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::deployment::Deployment;

/// The fencing number of one acquisition of a deployment's lease; the next
/// acquisition's is higher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Fence(i64);

impl Fence {
    pub fn new(value: i64) -> Self {
        Self(value)
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// One running Kubernaut process, as it names itself in the leases it holds: the host
/// name and a random suffix, unique per start.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(String);

impl InstanceId {
    /// `name`, with a random suffix so that a restarted process is another instance.
    pub fn unique(name: &str) -> Self {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let name: String = name
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
            .take(100)
            .collect();
        let name = if name.is_empty() { "kubernaut" } else { &name };
        Self(format!("{name}-{}", &suffix[..8]))
    }

    /// An id exactly as stored (tests, and reading leases back).
    pub fn from_stored(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A deployment whose lease was just acquired, with the fence its writes carry.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedDeployment {
    pub deployment: Deployment,
    pub fence: Fence,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_are_unique_per_start_and_keep_a_readable_name() {
        let first = InstanceId::unique("kubernaut-7f9c/pod");
        let second = InstanceId::unique("kubernaut-7f9c/pod");
        assert_ne!(first, second);
        assert!(first.as_str().starts_with("kubernaut-7f9cpod-"), "{first}");
        assert!(InstanceId::unique("").as_str().starts_with("kubernaut-"));
    }

    #[test]
    fn fences_order_by_acquisition() {
        assert!(Fence::new(2) > Fence::new(1));
        assert_eq!(Fence::new(7).get(), 7);
    }
}
