;; A component that tries to take more than its limits: its core module is
;; instantiated four times (four linear memories, four tables), and each
;; function grows one of them and returns what `memory.grow` / `table.grow`
;; returned (-1 when the host refuses).
(component
  (core module $m
    (memory (export "memory") 1)
    (table $t 1 funcref)
    (func (export "grow") (param i32) (result i32)
      (memory.grow (local.get 0)))
    (func (export "grow-table") (param i32) (result i32)
      (table.grow $t (ref.null func) (local.get 0))))
  (core instance $a (instantiate $m))
  (core instance $b (instantiate $m))
  (core instance $c (instantiate $m))
  (core instance $d (instantiate $m))
  (func (export "grow-a") (param "pages" u32) (result s32) (canon lift (core func $a "grow")))
  (func (export "grow-b") (param "pages" u32) (result s32) (canon lift (core func $b "grow")))
  (func (export "grow-c") (param "pages" u32) (result s32) (canon lift (core func $c "grow")))
  (func (export "grow-d") (param "pages" u32) (result s32) (canon lift (core func $d "grow")))
  (func (export "grow-table") (param "entries" u32) (result s32)
    (canon lift (core func $a "grow-table"))))
