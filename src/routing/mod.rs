//! Picking the route for a request: path normalisation (API.md §4) and the compiled route table
//! (§3.2) that the router publishes and the request path reads.

pub mod normalize;
pub mod table;

pub use normalize::{normalize_path, PathError};
pub use table::{CompiledRoute, Match, MatchKind, RouteTable};
