//! Fuzzes the image decoding every command reads files through: any input must give an image
//! or a skip reason, never a panic, a hang or an allocation beyond `MAX_PIXELS`' worth.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    for mode in [deepsim_data::ColorMode::Rgb, deepsim_data::ColorMode::Gray] {
        let _ = deepsim_data::decode_bytes(data, mode);
    }
});
