//! The DeePSiM generator step (`StepWorkload`: generator forward, AlexNet conv5 feature loss,
//! image loss, backward, Adam) on the device named by `DEEPSIM_TEST_DEVICE` (the CPU when
//! unset) against the same step on the CPU: the weights come from seeded host-side draws, so
//! both start from the same values and their losses agree step by step.

use candle::Device;
use deepsim_train::{parse_device, StepWorkload};

/// The test device; a device this build or machine lacks fails the test with its reason.
fn test_device() -> Device {
    let name = std::env::var("DEEPSIM_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
    parse_device(&name).unwrap_or_else(|e| panic!("DEEPSIM_TEST_DEVICE={name:?}: {e}"))
}

fn losses(device: &Device, steps: usize) -> Vec<f32> {
    let mut w = StepWorkload::new(64, 2, device).unwrap();
    (0..steps).map(|_| w.step().unwrap()).collect()
}

#[test]
fn the_generator_step_matches_the_cpu() {
    let device = test_device();
    let want = losses(&Device::Cpu, 3);
    let got = losses(&device, 3);
    for (k, (g, w)) in got.iter().zip(&want).enumerate() {
        // f32 convolutions summed in another order; Adam's first steps move every weight by
        // about the learning rate whatever the gradient's size, so the losses stay close.
        assert!(
            g.is_finite() && (g - w).abs() <= 1e-3 * w.abs(),
            "step {k} on {device:?}: loss {g} vs {w} on the CPU"
        );
    }
    assert!(want[2] < want[0], "the loss falls: {want:?}");
}
