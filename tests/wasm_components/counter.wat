;; A counter whose state lives in linear memory (the i32 at address 0), plus
;; functions that trap on purpose: an infinite loop (deadline / fuel), a memory
;; hog (memory cap), `unreachable` (guest abort) and unbounded recursion (stack
;; overflow). Every function takes a `session` string so the component can be
;; loaded keyed by session; the core functions ignore it.
(component
  (core module $m
    (memory (export "memory") 1)
    ;; Bump allocator for strings the host lowers into the guest; reset on every
    ;; call, because no function keeps its arguments.
    (global $bump (mut i32) (i32.const 1024))
    (func $reset (global.set $bump (i32.const 1024)))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p
        (i32.and
          (i32.add (global.get $bump) (i32.sub (local.get 2) (i32.const 1)))
          (i32.sub (i32.const 0) (local.get 2))))
      (global.set $bump (i32.add (local.get $p) (local.get 3)))
      (if (i32.gt_u (global.get $bump) (i32.mul (memory.size) (i32.const 65536)))
        (then
          (if (i32.eq
                (memory.grow (i32.add (i32.shr_u (i32.sub (global.get $bump)
                                                          (i32.mul (memory.size) (i32.const 65536)))
                                                  (i32.const 16))
                                      (i32.const 1)))
                (i32.const -1))
            (then unreachable))))
      (local.get $p))
    (func (export "add") (param i32 i32 i32) (result i32)
      (call $reset)
      (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (local.get 2)))
      (i32.load (i32.const 0)))
    (func (export "get") (param i32 i32) (result i32)
      (call $reset)
      (i32.load (i32.const 0)))
    (func (export "spin") (param i32 i32)
      (loop $forever (br $forever)))
    ;; Grows memory one MiB at a time until the host refuses, then aborts, the
    ;; way a guest allocator does when it is out of memory.
    (func (export "hog") (param i32 i32) (result i32)
      (loop $more
        (br_if $more (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
      unreachable)
    (func (export "crash") (param i32 i32)
      unreachable)
    (func $recurse (export "recurse") (param i32 i32 i32) (result i32)
      (i32.add (i32.const 1) (call $recurse (local.get 0) (local.get 1) (local.get 2))))
  )
  (core instance $i (instantiate $m))
  (alias core export $i "memory" (core memory $mem))
  (alias core export $i "realloc" (core func $realloc))

  (func (export "add") (param "session" string) (param "n" u32) (result u32)
    (canon lift (core func $i "add") (memory $mem) (realloc $realloc)))
  (func (export "get") (param "session" string) (result u32)
    (canon lift (core func $i "get") (memory $mem) (realloc $realloc)))
  (func (export "spin") (param "session" string)
    (canon lift (core func $i "spin") (memory $mem) (realloc $realloc)))
  (func (export "hog") (param "session" string) (result u32)
    (canon lift (core func $i "hog") (memory $mem) (realloc $realloc)))
  (func (export "crash") (param "session" string)
    (canon lift (core func $i "crash") (memory $mem) (realloc $realloc)))
  (func (export "recurse") (param "session" string) (param "depth" u32) (result u32)
    (canon lift (core func $i "recurse") (memory $mem) (realloc $realloc)))
)
