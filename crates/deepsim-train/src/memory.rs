//! Process-wide memory settings for training on the CPU, and the process's peak memory.
//!
//! A training step frees and reallocates the same large buffers every step (candle allocates a
//! fresh tensor per operation, and its autograd a zeroed gradient per node). glibc's malloc
//! serves blocks of more than 32 MB with their own `mmap` and hands them back with `munmap`
//! when freed, so each step faults in and zeroes hundreds of megabytes of new pages, with TLB
//! flushes on every core. [`retain_freed_memory`] keeps freed blocks in the heap for reuse.
//! [`one_compute_pool`] keeps candle's elementwise thread pool from competing with rayon's.

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

/// Runs candle's elementwise operations on the calling thread (sets `CANDLE_NUM_THREADS=1`
/// unless the environment already sets it), leaving the cores to rayon's pool, on which
/// deepsim's kernels (convolutions, linear layers, Adam) do the heavy work.
///
/// candle 0.11 runs its elementwise ops on a thread pool of its own beside rayon's, whose
/// workers spin between jobs; with as many threads of each as cores, a waiting thread of one
/// pool takes the core a working thread of the other needs (`perf` put 12 % of a small
/// convolution's backward in candle's barrier wait on 2 cores). Measured on the DeePSiM step
/// (2 cores, batch 8, alternated twice): 64×64 442/429 → 403/410 ms, 256×256 763/790 →
/// 733/710 ms.
///
/// Call it first thing in a program, before any candle operation (the pool starts with the
/// first one and reads the variable then): the `deepsim` binary does. It changes the whole
/// process, so libraries never call it on their own. Returns whether it set the variable.
pub fn one_compute_pool() -> bool {
    if std::env::var_os("CANDLE_NUM_THREADS").is_some() {
        return false;
    }
    std::env::set_var("CANDLE_NUM_THREADS", "1");
    true
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
