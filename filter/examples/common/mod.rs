//! What the examples share (not an example itself: Cargo builds only the
//! files directly in `examples/`).

/// The body of scripts/bench/wrk_post.lua, byte for byte: a 4 KiB JSON order.
pub fn post_body() -> Vec<u8> {
    let mut body = String::from(r#"{"order":{"id":"ord-42","customer":"user-00042","items":["#);
    let mut i = 0;
    while body.len() < 4000 {
        i += 1;
        if i > 1 {
            body.push(',');
        }
        body.push_str(&format!(
            r#"{{"sku":"SKU-{i:05}","qty":{},"price":{}.99,"note":"standard"}}"#,
            i % 7 + 1,
            i % 90 + 10
        ));
    }
    body.push_str("]}}");
    body.push_str(&" ".repeat(4096 - body.len()));
    body.into_bytes()
}
