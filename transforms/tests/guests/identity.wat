;; The smallest valid Weir transform (ABI 1): returns its input unchanged.
;; A bump allocator that never frees: memory only grows, so the host recycles instances.
(module
  (import "weir" "log" (func $log (param i32 i32 i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (data (i32.const 16) "identity called")
  (func (export "weir_abi_version") (result i32) (i32.const 1))
  (func $alloc (export "weir_alloc") (param $len i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (block $ok
      (loop $grow
        (br_if $ok (i32.le_u (i32.add (local.get $p) (local.get $len))
                             (i32.mul (memory.size) (i32.const 65536))))
        (if (i32.eq (memory.grow (i32.const 16)) (i32.const -1))
          (then (return (i32.const 0))))
        (br $grow)))
    (global.set $heap (i32.add (local.get $p) (local.get $len)))
    (local.get $p))
  (func (export "weir_free") (param i32 i32))
  (func (export "weir_transform") (param $signal i32) (param $ptr i32) (param $len i32) (result i64)
    (local $out i32)
    (call $log (i32.const 4) (i32.const 16) (i32.const 15))
    (local.set $out (call $alloc (local.get $len)))
    (if (i32.eqz (local.get $out)) (then (return (i64.const -3))))
    (memory.copy (local.get $out) (local.get $ptr) (local.get $len))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $out)) (i64.const 32))
            (i64.extend_i32_u (local.get $len)))))
