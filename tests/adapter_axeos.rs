//! The ESP-Miner adapter against the simulator over real HTTP, without MQTT: what each
//! generation is sent, and how refusals and reboots come back.

use miner2mqtt::miner::axeos::AxeOsClient;
use miner2mqtt::miner::{Command, MinerError};
use miner2mqtt::sim::axeos::{self, DeviceSpec, Firmware, SimDevice, BM1368, BM1370};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

async fn device(spec: DeviceSpec, cancel: &CancellationToken) -> SimDevice {
    axeos::start(spec, "127.0.0.1:0".parse().unwrap(), cancel.clone())
        .await
        .unwrap()
}

fn client(dev: &SimDevice, totp: Option<&str>) -> AxeOsClient {
    AxeOsClient::new(
        reqwest::Client::new(),
        &dev.addr.to_string(),
        Duration::from_secs(2),
        0,
        totp.map(|s| miner2mqtt::miner::axeos::totp(s).unwrap()),
        vec![],
    )
}

#[tokio::test]
async fn a_patch_the_firmware_rejects_is_reported_and_changes_nothing() {
    let cancel = CancellationToken::new();
    let dev = device(DeviceSpec::gamma(1, Firmware::V2_12), &cancel).await;
    let mut c = client(&dev, None);
    c.poll().await.unwrap();
    // The firmware answers 400 "Wrong API input" to a zero frequency.
    let e = c.execute(&Command::SetFrequency(0)).await.unwrap_err();
    assert!(matches!(e, MinerError::Refused { .. }), "{e:?}");
    assert!(
        e.to_string().contains("nothing was saved")
            && e.to_string().contains(&dev.addr.to_string()),
        "{e}"
    );
    assert_eq!(dev.snapshot().frequency, 525);
    assert!(dev.snapshot().patches.is_empty());
    cancel.cancel();
}

#[tokio::test]
async fn each_generation_is_sent_its_own_fan_key() {
    let cancel = CancellationToken::new();
    let legacy = device(DeviceSpec::new(2, Firmware::V2_10, BM1368, 1), &cancel).await;
    let modern = device(DeviceSpec::gamma(3, Firmware::V2_12), &cancel).await;
    for (dev, key) in [(&legacy, "fanspeed"), (&modern, "manualFanSpeed")] {
        let mut c = client(dev, None);
        let reading = c.poll().await.unwrap();
        assert_eq!(
            reading
                .capabilities
                .frequency_options
                .as_ref()
                .unwrap()
                .first(),
            Some(&400)
        );
        c.execute(&Command::SetFanSpeed(70)).await.unwrap();
        let snap = dev.snapshot();
        assert_eq!((snap.autofan, snap.manual_fan), (0, 70.0), "{key}");
        assert!(
            snap.patches[0].get(key).is_some(),
            "{key}: {:?}",
            snap.patches
        );
    }
    cancel.cancel();
}

#[tokio::test]
async fn a_restart_makes_the_device_unreachable_then_it_answers_again() {
    let cancel = CancellationToken::new();
    let mut spec = DeviceSpec::gamma(4, Firmware::V2_12);
    spec.restart_time = Duration::from_millis(800);
    let dev = device(spec, &cancel).await;
    let mut c = client(&dev, None);
    let before = c.poll().await.unwrap();
    c.execute(&Command::Restart).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let e = c.poll().await.unwrap_err();
    assert!(matches!(e, MinerError::Unreachable { .. }), "{e:?}");
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let after = c.poll().await.unwrap();
    assert!(after.telemetry.uptime.unwrap() <= before.telemetry.uptime.unwrap() + 1);
    assert_eq!(after.identity.hardware_id, before.identity.hardware_id);
    cancel.cancel();
}

#[tokio::test]
async fn nerdqaxe_with_otp_needs_the_totp_header() {
    let cancel = CancellationToken::new();
    let mut spec = DeviceSpec::new(5, Firmware::Nerdqaxe, BM1370, 4);
    spec.totp_secret = Some("JBSWY3DPEHPK3PXP".into());
    let dev = device(spec, &cancel).await;

    let mut without = client(&dev, None);
    without.poll().await.unwrap();
    let e = without
        .execute(&Command::SetFrequency(550))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("401"), "{e}");
    assert_eq!(dev.snapshot().frequency, 525);

    let mut with = client(&dev, Some("JBSWY3DPEHPK3PXP"));
    let reading = with.poll().await.unwrap();
    // This firmware has no /api/system/asic: no option list, control still follows the profile.
    assert_eq!(reading.capabilities.frequency_options, Some(vec![]));
    with.execute(&Command::SetFrequency(550)).await.unwrap();
    assert_eq!(dev.snapshot().frequency, 550);
    // autofanspeed 2 is NerdQaxe's PID mode: "auto on" keeps it.
    with.execute(&Command::SetAutoFan(true)).await.unwrap();
    assert_eq!(dev.snapshot().autofan, 2);
    // Pause is v2.14+ AxeOS only.
    assert!(with.execute(&Command::SetMining(false)).await.is_err());
    cancel.cancel();
}
