//! Phase `balance`: choose the target for this attempt.

use super::ctx::RequestCtx;
use super::error::ProxyError;

/// Picks the next target; `exclude` is the target that just failed (a retry goes elsewhere when
/// the service has another).
pub fn balance(ctx: &mut RequestCtx, exclude: Option<usize>) -> Result<(), ProxyError> {
    let route = ctx.route.as_ref().expect("balance runs after route");
    let picker = route.picker();
    let n = route.targets().len();
    let mut pick = picker.pick();
    if n > 1 && pick.is_some() && pick == exclude {
        pick = picker.pick();
    }
    ctx.target = pick;
    match pick {
        Some(_) => Ok(()),
        None => Err(ProxyError::BadGateway {
            target: route.service().name.clone(),
            reason: "the service has no targets".into(),
        }),
    }
}
