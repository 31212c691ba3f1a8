//! A perfectly good component of the wrong world: it must be refused as a plugin.

wit_bindgen::generate!({
    inline: "
        package test:calculator;
        world calculator {
            export add: func(a: u32, b: u32) -> u32;
        }
    ",
});

struct Calculator;

impl Guest for Calculator {
    fn add(a: u32, b: u32) -> u32 {
        a.wrapping_add(b)
    }
}

export!(Calculator);
