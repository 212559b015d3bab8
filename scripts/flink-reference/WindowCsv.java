// Reference implementation of examples/window_csv.rs on Apache Flink's DataStream API, for the
// window conformance check (scripts/window-conformance). Same CLI, same semantics:
//
//   WindowCsv --input events.csv --output out.csv [--late-output late.csv]
//             --window tumbling:SIZE | sliding:SIZE:SLIDE | session:GAP
//             [--out-of-orderness D] [--allowed-lateness L] [--early-fire-every E]
//             [--parallelism P] [--bad-lines fail|dead-letter:FILE]
//
//   WindowCsv --manifest cases.tsv
//       one case per line, its arguments separated by tabs; all cases run as independent
//       pipelines of one Flink job (one JVM and MiniCluster start-up for all of them).
//
// Input lines `key,event_time_ms,value` (a `key,event_time_ms,...` header is skipped); output one
// line per firing `key,window_start_ms,window_end_ms,count,sum,min,max`; the late output gets the
// raw lines of records too late for every window. The watermark is emitted after every record
// (max_ts - D - 1) by a custom WatermarkGenerator; periodic emission is switched off. The file is
// read by one source subtask, in order; P is the parallelism of the window operator.
//
// Run in a local MiniCluster: java -cp <flink lib jars>:<classes> WindowCsv ...

import org.apache.flink.api.common.eventtime.TimestampAssigner;
import org.apache.flink.api.common.eventtime.TimestampAssignerSupplier;
import org.apache.flink.api.common.eventtime.Watermark;
import org.apache.flink.api.common.eventtime.WatermarkGenerator;
import org.apache.flink.api.common.eventtime.WatermarkGeneratorSupplier;
import org.apache.flink.api.common.eventtime.WatermarkOutput;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.AggregateFunction;
import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.MemorySize;
import org.apache.flink.configuration.TaskManagerOptions;
import org.apache.flink.connector.file.src.FileSource;
import org.apache.flink.connector.file.src.reader.TextLineInputFormat;
import org.apache.flink.core.fs.Path;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.datastream.SingleOutputStreamOperator;
import org.apache.flink.streaming.api.datastream.WindowedStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.ProcessFunction;
import org.apache.flink.streaming.api.functions.windowing.ProcessWindowFunction;
import org.apache.flink.streaming.api.windowing.assigners.EventTimeSessionWindows;
import org.apache.flink.streaming.api.windowing.assigners.SlidingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.assigners.TumblingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.triggers.ContinuousEventTimeTrigger;
import org.apache.flink.streaming.api.windowing.windows.TimeWindow;
import org.apache.flink.util.CloseableIterator;
import org.apache.flink.util.Collector;
import org.apache.flink.util.OutputTag;

import java.io.BufferedWriter;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Paths;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

public class WindowCsv {

    /** A parsed input line. */
    public static class Event {
        public String key;
        public long ts;
        public long value;
        public String raw;

        public Event() {}

        public Event(String key, long ts, long value, String raw) {
            this.key = key;
            this.ts = ts;
            this.value = value;
            this.raw = raw;
        }
    }

    /** One case's command line. */
    static class Args {
        String input, output, lateOutput, window, badLines = "fail";
        long d = 0, lateness = 0;
        Long early = null;
        int parallelism = 1;

        static Args parse(List<String> a) {
            Args r = new Args();
            for (int i = 0; i < a.size(); i++) {
                String k = a.get(i);
                String v;
                int eq = k.indexOf('=');
                if (k.startsWith("--") && eq > 0) {
                    v = k.substring(eq + 1);
                    k = k.substring(0, eq);
                } else {
                    if (i + 1 >= a.size()) throw new IllegalArgumentException(k + " needs a value");
                    v = a.get(++i);
                }
                switch (k) {
                    case "--input": r.input = v; break;
                    case "--output": r.output = v; break;
                    case "--late-output": r.lateOutput = v; break;
                    case "--window": r.window = v; break;
                    case "--out-of-orderness": r.d = duration(v); break;
                    case "--allowed-lateness": r.lateness = duration(v); break;
                    case "--early-fire-every": r.early = duration(v); break;
                    case "--parallelism": case "-p": r.parallelism = Math.max(1, Integer.parseInt(v)); break;
                    case "--bad-lines": r.badLines = v; break;
                    default: throw new IllegalArgumentException("unknown argument " + k);
                }
            }
            if (r.input == null || r.output == null || r.window == null) {
                throw new IllegalArgumentException("--input, --output and --window are required");
            }
            if (!r.badLines.equals("fail")
                    && !(r.badLines.startsWith("dead-letter:") && r.badLines.length() > 12)) {
                throw new IllegalArgumentException(
                        "--bad-lines takes fail or dead-letter:FILE, not '" + r.badLines + "'");
            }
            return r;
        }
    }

    /** Durations as window_csv takes them: a number with an optional ms, s, min (m) or h. */
    static long duration(String s) {
        s = s.trim();
        int i = 0;
        while (i < s.length() && Character.isDigit(s.charAt(i))) i++;
        if (i == 0) throw new IllegalArgumentException("not a duration: '" + s + "'");
        long n = Long.parseLong(s.substring(0, i));
        switch (s.substring(i).trim()) {
            case "": case "ms": return n;
            case "s": return n * 1000;
            case "min": case "m": return n * 60_000;
            case "h": return n * 3_600_000;
            default: throw new IllegalArgumentException("unknown duration unit in '" + s + "'");
        }
    }

    /** Parses lines, counting them (parallelism 1, in file order); bad lines fail the job or go
     * to the dead-letter side output. */
    static class Parse extends ProcessFunction<String, Event> {
        final String file;
        final boolean deadLetter;
        final OutputTag<String> dead;
        long line = 0;

        Parse(String file, boolean deadLetter, OutputTag<String> dead) {
            this.file = file;
            this.deadLetter = deadLetter;
            this.dead = dead;
        }

        @Override
        public void processElement(String l, Context ctx, Collector<Event> out) {
            line++;
            // As window_csv: blank lines are skipped, a header line is allowed.
            if (l.isBlank() || l.stripLeading().startsWith("key,event_time_ms")) return;
            String error = null;
            Event e = null;
            String[] f = l.split(",", -1);
            if (f.length != 3) {
                error = "expected 3 fields (key,event_time_ms,value), found " + f.length;
            } else {
                try {
                    long ts = Long.parseLong(f[1].trim());
                    try {
                        e = new Event(f[0].trim(), ts, Long.parseLong(f[2].trim()), l);
                    } catch (NumberFormatException x) {
                        error = "value '" + f[2].trim() + "': not a number";
                    }
                } catch (NumberFormatException x) {
                    error = "event_time_ms '" + f[1].trim() + "': not a number";
                }
            }
            if (error == null) {
                out.collect(e);
            } else if (deadLetter) {
                ctx.output(dead, "{\"file\":" + json(file) + ",\"line\":" + line + ",\"error\":"
                        + json(error) + ",\"raw\":" + json(l) + "}");
            } else {
                throw new BadLine("rejected the record at " + file + ":" + line + ": " + error);
            }
        }
    }

    static class BadLine extends RuntimeException {
        BadLine(String m) {
            super(m);
        }
    }

    static String json(String s) {
        StringBuilder b = new StringBuilder("\"");
        for (char c : s.toCharArray()) {
            if (c == '"' || c == '\\') b.append('\\').append(c);
            else if (c < 0x20) b.append(String.format("\\u%04x", (int) c));
            else b.append(c);
        }
        return b.append('"').toString();
    }

    /** Bounded out-of-orderness, emitted after every record; nothing periodic. As Flink's
     * BoundedOutOfOrdernessWatermarks it starts from MIN_VALUE + D + 1, so the watermark never
     * underflows (timestamps near Long.MIN_VALUE give watermark MIN_VALUE). */
    static class PerRecordWatermarks implements WatermarkGenerator<Event> {
        final long d;
        long maxTs;

        PerRecordWatermarks(long d) {
            this.d = d;
            this.maxTs = Long.MIN_VALUE + d + 1;
        }

        @Override
        public void onEvent(Event e, long ts, WatermarkOutput out) {
            maxTs = Math.max(maxTs, ts);
            out.emitWatermark(new Watermark(maxTs - d - 1));
        }

        @Override
        public void onPeriodicEmit(WatermarkOutput out) {}
    }

    /** count, sum (wrapping), min, max. */
    static class Stats implements AggregateFunction<Event, long[], long[]> {
        @Override
        public long[] createAccumulator() {
            return new long[] {0, 0, Long.MAX_VALUE, Long.MIN_VALUE};
        }

        @Override
        public long[] add(Event e, long[] a) {
            a[0] += 1;
            a[1] += e.value;
            a[2] = Math.min(a[2], e.value);
            a[3] = Math.max(a[3], e.value);
            return a;
        }

        @Override
        public long[] getResult(long[] a) {
            return a;
        }

        @Override
        public long[] merge(long[] a, long[] b) {
            return new long[] {a[0] + b[0], a[1] + b[1], Math.min(a[2], b[2]), Math.max(a[3], b[3])};
        }
    }

    /** Adds key and window bounds; prefixes the case tag. */
    static class Format extends ProcessWindowFunction<long[], String, String, TimeWindow> {
        final String tag;

        Format(String tag) {
            this.tag = tag;
        }

        @Override
        public void process(String key, Context ctx, Iterable<long[]> in, Collector<String> out) {
            for (long[] a : in) {
                TimeWindow w = ctx.window();
                out.collect(tag + "O\t" + key + "," + w.getStart() + "," + w.getEnd() + "," + a[0]
                        + "," + a[1] + "," + a[2] + "," + a[3]);
            }
        }
    }

    static class Prefix implements MapFunction<String, String> {
        final String p;

        Prefix(String p) {
            this.p = p;
        }

        @Override
        public String map(String s) {
            return p + s;
        }
    }

    static class Raw implements MapFunction<Event, String> {
        final String p;

        Raw(String p) {
            this.p = p;
        }

        @Override
        public String map(Event e) {
            return p + e.raw;
        }
    }

    static class ByKey implements KeySelector<Event, String> {
        @Override
        public String getKey(Event e) {
            return e.key;
        }
    }

    /** Adds case `idx`'s pipeline to `env`; returns its tagged outputs ("idx\tO|L|D\tline"). */
    static DataStream<String> build(StreamExecutionEnvironment env, int idx, Args a) {
        String tag = idx + "\t";
        boolean deadLetter = a.badLines.startsWith("dead-letter:");
        OutputTag<String> dead = new OutputTag<String>("dead-" + idx) {};
        OutputTag<Event> late = new OutputTag<Event>("late-" + idx) {};

        FileSource<String> src =
                FileSource.forRecordStreamFormat(new TextLineInputFormat(), new Path(a.input)).build();
        SingleOutputStreamOperator<Event> parsed = env
                .fromSource(src, WatermarkStrategy.noWatermarks(), "file-" + idx)
                .setParallelism(1)
                .process(new Parse(a.input, deadLetter, dead))
                .name("parse-" + idx)
                .setParallelism(1);
        final long d = a.d;
        WatermarkStrategy<Event> wms = WatermarkStrategy
                .forGenerator((WatermarkGeneratorSupplier<Event>) ctx -> new PerRecordWatermarks(d))
                .withTimestampAssigner(
                        (TimestampAssignerSupplier<Event>) ctx -> (TimestampAssigner<Event>) (e, t) -> e.ts);
        DataStream<Event> events = parsed.assignTimestampsAndWatermarks(wms).setParallelism(1);

        String[] spec = a.window.split(":");
        WindowedStream<Event, String, TimeWindow> w;
        if (spec.length == 2 && spec[0].equals("tumbling")) {
            w = events.keyBy(new ByKey())
                    .window(TumblingEventTimeWindows.of(Duration.ofMillis(duration(spec[1]))));
        } else if (spec.length == 3 && spec[0].equals("sliding")) {
            w = events.keyBy(new ByKey()).window(SlidingEventTimeWindows.of(
                    Duration.ofMillis(duration(spec[1])), Duration.ofMillis(duration(spec[2]))));
        } else if (spec.length == 2 && spec[0].equals("session")) {
            w = events.keyBy(new ByKey())
                    .window(EventTimeSessionWindows.withGap(Duration.ofMillis(duration(spec[1]))));
        } else {
            throw new IllegalArgumentException("--window takes tumbling:SIZE, sliding:SIZE:SLIDE or "
                    + "session:GAP, not '" + a.window + "'");
        }
        w = w.allowedLateness(Duration.ofMillis(a.lateness));
        if (a.lateOutput != null) w = w.sideOutputLateData(late);
        if (a.early != null) w = w.trigger(ContinuousEventTimeTrigger.of(Duration.ofMillis(a.early)));
        SingleOutputStreamOperator<String> out =
                w.aggregate(new Stats(), new Format(tag)).name("window-" + idx).setParallelism(a.parallelism);

        DataStream<String> all = out;
        if (a.lateOutput != null) {
            all = all.union(out.getSideOutput(late).map(new Raw(tag + "L\t")).setParallelism(a.parallelism));
        }
        if (deadLetter) {
            all = all.union(parsed.getSideOutput(dead).map(new Prefix(tag + "D\t")).setParallelism(1));
        }
        return all;
    }

    static Throwable badLine(Throwable t) {
        for (Throwable c = t; c != null; c = c.getCause()) {
            if (c instanceof BadLine) return c;
        }
        return null;
    }

    public static void main(String[] argv) throws Exception {
        List<Args> cases = new ArrayList<>();
        try {
            if (argv.length == 2 && argv[0].equals("--manifest")) {
                for (String l : Files.readAllLines(Paths.get(argv[1]), StandardCharsets.UTF_8)) {
                    if (l.isBlank() || l.startsWith("#")) continue;
                    cases.add(Args.parse(List.of(l.split("\t"))));
                }
            } else {
                cases.add(Args.parse(List.of(argv)));
            }
            for (Args a : cases) {
                if (!Files.isRegularFile(Paths.get(a.input))) {
                    throw new IllegalArgumentException("input " + a.input + " is not a readable file");
                }
            }
        } catch (IllegalArgumentException e) {
            System.err.println("Error: " + e.getMessage());
            System.exit(2);
        }

        Configuration conf = new Configuration();
        // Many small pipelines in one job: give the MiniCluster enough network buffers.
        conf.set(TaskManagerOptions.NETWORK_MEMORY_MIN, MemorySize.parse("256mb"));
        conf.set(TaskManagerOptions.NETWORK_MEMORY_MAX, MemorySize.parse("256mb"));
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment(conf);
        env.setParallelism(1);
        // Watermarks come from onEvent only.
        env.getConfig().setAutoWatermarkInterval(0);

        DataStream<String> all = null;
        for (int i = 0; i < cases.size(); i++) {
            DataStream<String> s = build(env, i, cases.get(i));
            all = all == null ? s : all.union(s);
        }

        Map<Integer, Map<String, List<String>>> results = new HashMap<>();
        try (CloseableIterator<String> it = all.executeAndCollect("window_csv reference")) {
            while (it.hasNext()) {
                String[] p = it.next().split("\t", 3);
                results.computeIfAbsent(Integer.parseInt(p[0]), k -> new HashMap<>())
                        .computeIfAbsent(p[1], k -> new ArrayList<>())
                        .add(p[2]);
            }
        } catch (Exception e) {
            Throwable b = badLine(e);
            if (b != null) {
                System.err.println("Error: operator 'parse' " + b.getMessage());
                System.exit(1);
            }
            throw e;
        }

        for (int i = 0; i < cases.size(); i++) {
            Args a = cases.get(i);
            Map<String, List<String>> r = results.getOrDefault(i, Map.of());
            write(a.output, r.get("O"));
            if (a.lateOutput != null) write(a.lateOutput, r.get("L"));
            if (a.badLines.startsWith("dead-letter:")) write(a.badLines.substring(12), r.get("D"));
        }
        System.exit(0);
    }

    static void write(String path, List<String> lines) throws IOException {
        try (BufferedWriter w = Files.newBufferedWriter(Paths.get(path), StandardCharsets.UTF_8)) {
            if (lines != null) {
                for (String l : lines) {
                    w.write(l);
                    w.write('\n');
                }
            }
        }
    }
}
