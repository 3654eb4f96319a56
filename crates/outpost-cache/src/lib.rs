//! Cache semantics above RFC rules: canonical cache keys, cookie policy, the one reuse engine
//! ([`decide::evaluate_reuse`]) and store plan ([`decide::plan_store`]), and the per-request
//! [`CacheFlow`] state machine the proxy drives ([`flow`]). Pure: no I/O, the clock passed in.

pub mod clock;
pub mod cookie;
pub mod decide;
pub mod flow;
pub mod key;

pub use clock::{Clock, SystemClock};
pub use decide::{
    evaluate_hit, evaluate_reuse, plan_store, HitAction, HitEval, ReuseFacts, StorePlan,
    StoredTiming, TenantPolicy,
};
pub use flow::{
    CacheFlow, DontStore, Failed, FailureClass, Fetch, Fetched, Fill, Follow, Followed, Freshness,
    Lookup, Pass, PassReason, ResponseFacts, Revalidated, Serve, Stored,
};
pub use key::{canonicalize, canonicalize_target, CanonicalUrl, KeyError, QueryRules};
