//! Fuzzes the PyTorch checkpoint reader (zip and legacy formats, and the pickle reader under
//! both): any input must give `Ok` or `Err`, never a panic, a hang or a runaway allocation.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = deepsim_comparators::weights::pytorch::parse_checkpoint(data);
    let _ = deepsim_comparators::weights::pickle::read(data);
});
