use actix_web::http::header::HeaderMap;

use super::*;

fn limits(max_bytes: u64) -> CacheLimits {
    CacheLimits {
        max_bytes,
        max_entry_bytes: max_bytes.min(1 << 20),
    }
}

fn key(route: &str, version: u64, path: &str) -> Key {
    Key::primary(&Request {
        route,
        version,
        method: "GET",
        path,
        query: None,
        vary: &[],
        headers: &HeaderMap::new(),
        consumer: None,
    })
}

fn answer(body: &'static str, ttl: Duration) -> Entry {
    Entry::Response(Arc::new(Stored {
        status: StatusCode::OK,
        headers: vec![],
        body: Bytes::from_static(body.as_bytes()),
        stored_at: Instant::now(),
        ttl,
        age: 0,
    }))
}

const MINUTE: Duration = Duration::from_secs(60);

fn has(cache: &ResponseCache, k: &Key) -> bool {
    cache.get(k, Instant::now()).is_some()
}

#[test]
fn entries_are_served_while_fresh() {
    let cache = ResponseCache::new(&limits(1 << 20));
    let k = key("r", 1, "/a");
    assert!(!has(&cache, &k));
    cache.insert(k.clone(), answer("x", MINUTE));
    assert!(has(&cache, &k));
    let stale = Instant::now() + MINUTE;
    assert!(cache.get(&k, stale).is_none(), "past its ttl");
}

#[test]
fn purges_drop_what_they_match_at_once() {
    let cache = ResponseCache::new(&limits(1 << 20));
    let keys = [
        key("users", 1, "/users/1"),
        key("users", 1, "/usersfoo"),
        key("items", 1, "/users/2"),
        key("items", 1, "/items/1"),
    ];
    let fill = || {
        for k in &keys {
            cache.insert(k.clone(), answer("x", MINUTE));
        }
    };
    let present = || keys.iter().map(|k| has(&cache, k)).collect::<Vec<_>>();
    fill();
    let before = cache.generation();
    cache.purge(&Purge {
        route: None,
        prefix: Some("/users".into()),
    });
    assert_eq!(present(), [false, true, false, true]);
    assert!(cache.generation() > before);

    fill();
    cache.purge(&Purge {
        route: Some("items".into()),
        prefix: None,
    });
    assert_eq!(present(), [true, true, false, false]);

    fill();
    cache.purge(&Purge::default());
    assert_eq!(present(), [false; 4]);

    // Entries stored after a purge are not touched by it.
    fill();
    assert_eq!(present(), [true; 4]);
}

#[test]
fn changed_and_deleted_routes_lose_their_entries() {
    let cache = ResponseCache::new(&limits(1 << 20));
    let (old, new, other, gone) = (
        key("r", 1, "/a"),
        key("r", 2, "/a"),
        key("s", 1, "/a"),
        key("t", 1, "/a"),
    );
    for k in [&old, &new, &other, &gone] {
        cache.insert(k.clone(), answer("x", MINUTE));
    }
    cache.drop_routes(HashMap::from([("r".into(), Some(2)), ("t".into(), None)]));
    assert!(!has(&cache, &old) && has(&cache, &new));
    assert!(has(&cache, &other) && !has(&cache, &gone));
}

#[test]
fn the_cache_holds_at_most_its_bytes() {
    let cache = ResponseCache::new(&limits(64 * 1024));
    static BODY: [u8; 4096] = [b'x'; 4096];
    for i in 0..200 {
        let k = key("r", 1, &format!("/{i}"));
        cache.insert(
            k,
            Entry::Response(Arc::new(Stored {
                status: StatusCode::OK,
                headers: vec![],
                body: Bytes::from_static(&BODY),
                stored_at: Instant::now(),
                ttl: MINUTE,
                age: 0,
            })),
        );
    }
    let (entries, bytes) = cache.usage();
    assert!(bytes <= 64 * 1024, "{bytes} bytes in {entries} entries");
    assert!(entries > 0 && entries < 200, "{entries}");
}

#[actix_rt::test]
async fn one_flight_per_key_and_its_waiters_wake_when_it_ends() {
    let cache = ResponseCache::new(&limits(1 << 20));
    let k = key("r", 1, "/a");
    let Joined::Lead(guard) = cache.join(k.flight_hash()) else {
        panic!("the first miss leads");
    };
    let Joined::Wait(flight) = cache.join(k.flight_hash()) else {
        panic!("the second waits");
    };
    let other = key("r", 1, "/b");
    assert!(matches!(cache.join(other.flight_hash()), Joined::Lead(_)));

    let waiter =
        actix_rt::spawn(async move { flight.wait(Instant::now() + Duration::from_secs(30)).await });
    cache.insert(k.clone(), answer("x", MINUTE));
    drop(guard);
    assert!(waiter.await.unwrap(), "woken, not timed out");
    // The flight is over: the next miss leads again.
    assert!(matches!(cache.join(k.flight_hash()), Joined::Lead(_)));

    // A waiter gives up at its deadline.
    let _lead = cache.join(k.flight_hash());
    let Joined::Wait(flight) = cache.join(k.flight_hash()) else {
        panic!("waits");
    };
    assert!(
        !flight
            .wait(Instant::now() + Duration::from_millis(20))
            .await
    );
}
