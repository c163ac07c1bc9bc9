//! A GPU shared by several sessions: while others are active the server flags its replies,
//! and a client reading one stops its lane threads' polling (`transport::crowd`); a session
//! alone is never told, and stops being told once the others have gone quiet. (Its own test
//! binary: whether this process is crowded is one flag for all its connections.)

mod common;
use common::*;
use protocol::ops;
use std::time::Duration;
use transport::crowd::crowded;

#[test]
fn clients_learn_while_others_share_the_gpu() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::sim(tmp.path(), &[]);
    let open = || {
        let c = rust_client(&server.address, "").unwrap();
        let ctx = c.call(0, &ops::cuDevicePrimaryCtxRetain { dev: 0 }, &[], None).unwrap();
        (c, ctx)
    };
    let ask = |(c, ctx): &(transport::Conn, u64)| c.call(*ctx, &ops::cuCtxSynchronize {}, &[], None).unwrap();
    let a = open();
    for _ in 0..30 {
        ask(&a);
        std::thread::sleep(Duration::from_millis(2));
        assert!(!crowded(), "a session alone was told of others");
    }
    let b = open();
    let took = wait_until(Duration::from_secs(5), || {
        ask(&a);
        ask(&b);
        crowded()
    });
    assert!(took.is_some(), "two sessions asking at once were not told of each other");
    // The second stays connected but asks nothing: the first is alone again.
    let took = wait_until(Duration::from_secs(5), || {
        ask(&a);
        !crowded()
    });
    assert!(took.is_some(), "still crowded after the other session went quiet");
    for _ in 0..30 {
        ask(&a);
        std::thread::sleep(Duration::from_millis(2));
        assert!(!crowded(), "told of a session that asks nothing");
    }
}
