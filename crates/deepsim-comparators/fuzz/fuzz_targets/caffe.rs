//! Fuzzes the Caffe `.caffemodel` reader: any input must give `Ok` or `Err`, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = deepsim_comparators::weights::caffe::parse_caffemodel(data);
});
