//! Cache semantics above RFC rules: canonical cache keys, cookie policy, Vary variance keys, and the
//! per-request decisions (serve, serve stale, revalidate, store for how long) as pure functions.

pub mod cookie;
pub mod decide;
pub mod key;

pub use decide::{
    evaluate_hit, evaluate_reuse, plan_store, HitAction, HitEval, ReuseFacts, StorePlan,
    StoredTiming, TenantPolicy,
};
pub use key::{canonicalize, canonicalize_target, CanonicalUrl, KeyError, QueryRules};
