//! Process-wide memory settings for training on the CPU, and the process's peak memory.
//!
//! A training step frees and reallocates the same large buffers every step (candle allocates a
//! fresh tensor per operation, and its autograd a zeroed gradient per node). glibc's malloc
//! serves blocks of more than 32 MB with their own `mmap` and hands them back with `munmap`
//! when freed, so each step faults in and zeroes hundreds of megabytes of new pages, with TLB
//! flushes on every core. [`retain_freed_memory`] keeps freed blocks in the heap for reuse.

/// Asks glibc's malloc to serve every block from its heap (no per-block `mmap`) and to keep
/// freed memory instead of returning it to the kernel, so a training step reuses pages it has
/// already mapped. On the DeePSiM step of the benchmarks (batch 8, 64×64, 2 cores) this takes
/// about a quarter off the step at the same peak memory (docs/PERFORMANCE.md).
///
/// Call it at the start of a program, before large allocations: the `deepsim` binary does.
/// It changes the whole process's allocator, so libraries never call it on their own.
/// Returns whether the settings were applied (only with glibc on Linux; elsewhere it does
/// nothing and returns `false`).
pub fn retain_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // glibc's <malloc.h>.
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_MMAP_MAX: i32 = -4;
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        // SAFETY: mallopt only sets allocator parameters; both are documented values (a
        // negative trim threshold disables trimming), and it returns 0 for a value it refuses.
        unsafe { mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, -1) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// The process's peak resident memory so far in bytes (`VmHWM` of `/proc/self/status`), or
/// `None` where the kernel does not report it.
pub fn peak_resident_bytes() -> Option<u64> {
    resident_field("VmHWM:")
}

/// The process's resident memory now in bytes (`VmRSS`), or `None` where not reported.
pub fn resident_bytes() -> Option<u64> {
    resident_field("VmRSS:")
}

fn resident_field(name: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(name))?;
    let kb: u64 = line[name.len()..].trim().strip_suffix("kB")?.trim().parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resident_memory_grows_with_a_touched_buffer() {
        if resident_bytes().is_none() {
            // Not Linux: nothing is reported, and nothing else to check.
            assert!(peak_resident_bytes().is_none());
            return;
        }
        let before = peak_resident_bytes().unwrap();
        // 64 MB written page by page.
        let mut v = vec![0u8; 64 << 20];
        for i in (0..v.len()).step_by(4096) {
            v[i] = 1;
        }
        let now = resident_bytes().unwrap();
        let peak = peak_resident_bytes().unwrap();
        assert!(peak >= now && peak >= before, "peak {peak}, now {now}, before {before}");
        assert!(now >= 60 << 20, "64 MB touched, {now} bytes resident");
        std::hint::black_box(&v);
    }
}
