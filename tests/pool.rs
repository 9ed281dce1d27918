//! The executor's worker pool: repeated multi-threaded runs reuse the same workers and give the
//! same bits as one thread, changing the thread count replaces them, and dropping an executable
//! joins them.

use netc::runtime::input;
use std::path::Path;
use std::time::{Duration, Instant};

/// Live threads of this process named `netc-worker-*` (Linux; `None` elsewhere).
fn pool_threads() -> Option<usize> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    Some(
        tasks
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|name| name.starts_with("netc-worker"))
            .count(),
    )
}

/// Waits (up to a few seconds) until `pool_threads` is `n`: a joined thread leaves the task list
/// a moment after `join` returns.
fn expect_pool_threads(n: usize) {
    let Some(mut now) = pool_threads() else { return };
    let start = Instant::now();
    while now != n && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
        now = pool_threads().unwrap_or(n);
    }
    assert_eq!(now, n, "worker threads alive");
}

// One test, so that no other test of this binary starts or stops workers meanwhile.
#[test]
fn repeated_runs_reuse_the_workers_and_drop_joins_them() {
    let options = netc::Options {
        overrides: vec![("res".into(), "96".into()), ("alpha".into(), "0.5".into())],
        batch: 1,
    };
    let c = netc::compile_file(Path::new("nets/mobilenet_v2.net"), &options, None)
        .unwrap_or_else(|f| panic!("{}", f.render()));
    let w = c.init_weights(3);
    let x = input::random(c.input_shape(), 7);
    let y = input::random(c.input_shape(), 8);
    let mut exe = c.compile_jit(&w, &netc::codegen::Options::default()).unwrap();
    let one_x = exe.run(&x, 1).unwrap();
    let one_y = exe.run(&y, 1).unwrap();
    assert_eq!(exe.workers(), 0, "a one-thread run starts no worker");
    expect_pool_threads(0);

    for i in 0..20 {
        // Alternate inputs so that a run reading the previous run's values would show.
        let (input, expected) = if i % 2 == 0 { (&x, &one_x) } else { (&y, &one_y) };
        assert_eq!(&exe.run(input, 2).unwrap(), expected, "run {i} on two threads");
        assert_eq!(exe.workers(), 1, "two threads are the caller and one worker");
    }
    expect_pool_threads(1);

    // Other thread counts replace the pool; one thread leaves it parked.
    assert_eq!(exe.run(&x, 3).unwrap(), one_x);
    assert_eq!(exe.workers(), 2);
    expect_pool_threads(2);
    assert_eq!(exe.run(&y, 1).unwrap(), one_y);
    assert_eq!(exe.run(&x, 2).unwrap(), one_x);
    expect_pool_threads(1);

    // After a pause long enough for the workers to go to sleep, a run wakes them.
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(exe.run(&y, 2).unwrap(), one_y);

    drop(exe);
    expect_pool_threads(0);
}
