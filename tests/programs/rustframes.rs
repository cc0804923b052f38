// Rust frames for stackproof's tests: a crash through a trait object and a `dyn FnMut`
// closure, and threads waiting on a condition variable.
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

#[inline(never)]
fn crash(v: i32) -> i32 {
    let p: *mut i32 = std::hint::black_box(std::ptr::null_mut());
    unsafe { std::ptr::write_volatile(p, v) };
    v
}

trait Step {
    fn step(&self, x: i32) -> i32;
}

struct Leaf(i32);

impl Step for Leaf {
    #[inline(never)]
    fn step(&self, x: i32) -> i32 {
        crash(x + self.0) + 1
    }
}

#[inline(never)]
fn apply(f: &mut dyn FnMut(i32) -> i32, x: i32) -> i32 {
    f(x) * 2
}

#[inline(never)]
fn through(steps: &[Box<dyn Step>], x: i32) -> i32 {
    let mut acc = 0;
    let mut cb = |y: i32| {
        acc += y;
        steps[std::hint::black_box(0)].step(y)
    };
    apply(&mut cb, x) + acc
}

fn main() {
    let pair = Arc::new((Mutex::new(false), Condvar::new()));
    let mut waiting = Vec::new();
    for _ in 0..2 {
        let p = Arc::clone(&pair);
        waiting.push(thread::spawn(move || {
            let (m, c) = &*p;
            let mut ready = m.lock().unwrap();
            while !*ready {
                ready = c.wait(ready).unwrap();
            }
        }));
    }
    thread::sleep(std::time::Duration::from_millis(200));
    let steps: Vec<Box<dyn Step>> = vec![Box::new(Leaf(3))];
    let n = std::env::args().count() as i32;
    std::process::exit(through(&steps, n));
}
