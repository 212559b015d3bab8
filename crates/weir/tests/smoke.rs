use weir::prelude::*;

#[derive(Clone, Default)]
struct Count {
    n: ValueState<u64>,
}

impl KeyedProcessFunction<String, String, (String, u64)> for Count {
    fn open(&mut self, s: &mut StateRegistry<'_, String>) -> FnResult {
        self.n = s.value_state("n")?;
        Ok(())
    }
    fn process_element(
        &mut self,
        w: String,
        ctx: &mut KeyedContext<'_, String>,
        out: &mut Collector<'_, (String, u64)>,
    ) -> FnResult {
        let n = self.n.mutate(
            ctx,
            || 0,
            |n| {
                *n += 1;
                *n
            },
        );
        out.collect((w, n));
        Ok(())
    }
}

#[test]
fn word_count_parallel() {
    for p in [1, 2, 4] {
        let env = StreamEnv::new().with_parallelism(p);
        let out = CollectSink::new();
        let text = vec!["a b c", "a b", "a"]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        env.from_collection(text)
            .flat_map(|l: String| l.split_whitespace().map(String::from).collect::<Vec<_>>())
            .key_by(|w: &String| w.clone())
            .process(Count::default())
            .sink(out.clone());
        env.execute("wc").unwrap();
        let mut v = out.values();
        v.sort();
        assert_eq!(
            v,
            vec![
                ("a".into(), 1),
                ("a".into(), 2),
                ("a".into(), 3),
                ("b".into(), 1),
                ("b".into(), 2),
                ("c".into(), 1)
            ],
            "p={p}"
        );
    }
}
