//! The shutdown token: a real SIGINT to this process cancels it (its own test binary, so that no
//! other test shares the signal).

#[tokio::test]
async fn sigint_cancels_the_token_once_handlers_are_installed() {
    let cancel = auroraq_runtime::wiring::stop_on_signals();
    assert!(!cancel.is_cancelled());
    // The handlers are installed when stop_on_signals returns: raising now cannot kill us.
    nix::sys::signal::raise(nix::sys::signal::Signal::SIGINT).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), cancel.cancelled())
        .await
        .expect("SIGINT cancelled the token");
}
