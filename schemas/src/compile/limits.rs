//! Generous bounds on list lengths and sizes: far above any real config, low enough that
//! one resource cannot make lookups or compiles pathological.

pub(super) const MAX_HOSTNAMES: usize = 100;
pub(super) const MAX_RULES: usize = 1_000;
pub(super) const MAX_MATCHES: usize = 64;
pub(super) const MAX_VALUE_MATCHES: usize = 16;
pub(super) const MAX_FILTERS: usize = 16;
pub(super) const MAX_BACKENDS: usize = 64;
pub(super) const MAX_ENDPOINTS: usize = 1_000;
pub(super) const MAX_ENDPOINT_WEIGHT: u32 = 1_000;
pub(super) const MAX_BACKEND_WEIGHT: u32 = 1_000_000;
pub(super) const MAX_BODY_LIMIT: u64 = 1 << 40;
pub(super) const MAX_FALLBACK_BODY: usize = 64 * 1024;
pub(super) const MAX_MIRROR_BODY: u64 = 16 << 20;
