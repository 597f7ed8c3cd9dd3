using System.Text;
using HalfMsg.Broker.Core.Delivery;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Core.Tests;

/// <summary>
/// The SQL92 property filter: Apache RocketMQ's grammar and its semantics (properties are strings, a comparison with a
/// number converts them, three-valued logic with a missing property, a failed conversion fails the whole evaluation).
/// </summary>
public sealed class SqlFilterTests
{
    private static bool Eval(string sql, params (string Name, string Value)[] props)
    {
        var map = props.ToDictionary(p => p.Name, p => p.Value);
        return SqlFilter.Parse(sql).Matches(name => map.TryGetValue(name, out var v) ? v : null);
    }

    private static string ParseError(string sql)
    {
        Assert.False(SqlFilter.TryParse(sql, out var filter, out var error), $"'{sql}' parsed");
        Assert.Null(filter);
        return error!;
    }

    [Theory]
    [InlineData("a = 'x'", true)]
    [InlineData("a = 'y'", false)]
    [InlineData("a <> 'y'", true)]
    [InlineData("'x' = a", true)]
    [InlineData("n = 5", true)]
    [InlineData("n = 5.0", true)]
    [InlineData("n > 4", true)]
    [InlineData("n >= 5", true)]
    [InlineData("n < 5", false)]
    [InlineData("n <= 5L", true)]
    [InlineData("n > -6", true)]
    [InlineData("n > 4.5", true)]
    [InlineData("n > .5E1", false)]
    [InlineData("n BETWEEN 1 AND 5", true)]
    [InlineData("n BETWEEN 6 AND 9", false)]
    [InlineData("n NOT BETWEEN 6 AND 9", true)]
    [InlineData("d > 1", false)]                // an int literal reads d = '1.5' as an int: that fails (no match)
    [InlineData("d > 1.0", true)]
    [InlineData("a IN ('y', 'x')", true)]
    [InlineData("a NOT IN ('y', 'x')", false)]
    [InlineData("a not in ('y')", true)]
    [InlineData("a IS NOT NULL", true)]
    [InlineData("a IS NULL", false)]
    [InlineData("missing IS NULL", true)]
    [InlineData("missing IS NOT NULL", false)]
    [InlineData("s CONTAINS 'ell'", true)]
    [InlineData("s NOT CONTAINS 'ell'", false)]
    [InlineData("s STARTSWITH 'he'", true)]
    [InlineData("s NOT STARTSWITH 'he'", false)]
    [InlineData("s ENDSWITH 'lo'", true)]
    [InlineData("s ENDSWITH 'he'", false)]
    [InlineData("s not endswith 'he'", true)]
    [InlineData("s CONTAINS ''", false)]        // an empty search text matches nothing, in both forms (Apache's)
    [InlineData("s NOT CONTAINS ''", false)]
    [InlineData("a = 'x' AND n > 1", true)]
    [InlineData("a = 'y' OR n > 1", true)]
    [InlineData("a = 'y' OR n > 9", false)]
    [InlineData("NOT (a = 'y')", true)]
    [InlineData("NOT (a = 'x' AND n = 5)", false)]
    [InlineData("(a = 'x' OR a = 'y') AND (n = 4 OR n = 5)", true)]
    [InlineData("TRUE", true)]
    [InlineData("FALSE", false)]
    [InlineData("NULL", false)]
    [InlineData("a", false)]                    // a property alone is a string, not a boolean: false
    [InlineData("b = TRUE", true)]              // 'TRUE' (any case) reads as true against a boolean
    [InlineData("b = FALSE", false)]
    [InlineData("q = 'it''s'", true)]
    [InlineData("A = 'x'", false)]              // property names are case-sensitive
    [InlineData("a = 'x' -- a comment\n AND n = 5", true)]
    [InlineData("a /* here */ = 'x'", true)]
    [InlineData("big = 3000000000", true)]      // above an int: a long literal, the property read as a long
    public void Expressions_evaluate_as_in_rocketmq(string sql, bool expected)
    {
        var props = new[] { ("a", "x"), ("n", "5"), ("d", "1.5"), ("s", "hello"), ("b", "true"), ("q", "it's"), ("big", "3000000000") };
        Assert.Equal(expected, Eval(sql, props));
    }

    [Fact]
    public void Keywords_are_case_insensitive_and_properties_are_names()
    {
        Assert.True(Eval("a = 'x' and NOT (n between 1 AND 2) Or FaLsE", ("a", "x"), ("n", "5")));
        Assert.True(Eval("$a_1 = 'v' AND _b = 'w'", ("$a_1", "v"), ("_b", "w")));
    }

    [Fact]
    public void A_missing_property_is_unknown_and_unknown_never_matches_not_even_negated()
    {
        // Three-valued, as Apache's LogicExpression and UnaryExpression.createNOT: NOT unknown stays unknown.
        Assert.False(Eval("x = 'v'"));
        Assert.False(Eval("x <> 'v'"));
        Assert.False(Eval("NOT (x = 'v')"));
        Assert.False(Eval("x > 3"));
        Assert.False(Eval("NOT (x > 3)"));
        Assert.False(Eval("x IN ('v')"));
        Assert.False(Eval("x NOT IN ('v')"));
        Assert.False(Eval("x BETWEEN 1 AND 2"));
        Assert.False(Eval("x NOT BETWEEN 1 AND 2"));
        // Unknown OR true is true; unknown AND false is false; unknown AND true stays unknown.
        Assert.True(Eval("x = 'v' OR a = 'y'", ("a", "y")));
        Assert.True(Eval("NOT (x = 'v' AND a = 'z')", ("a", "y")));
        Assert.False(Eval("NOT (x = 'v' AND a = 'y')", ("a", "y")));
        // The text tests are false, not unknown, for a missing property: their NOT form too, and NOT of them is true.
        Assert.False(Eval("x CONTAINS 'v'"));
        Assert.False(Eval("x NOT CONTAINS 'v'"));
        Assert.True(Eval("NOT (x CONTAINS 'v')"));
    }

    [Fact]
    public void A_property_that_does_not_convert_to_the_number_fails_the_whole_expression()
    {
        // Apache's Integer.valueOf / Double.valueOf throws, and the broker's filter treats the exception as no match,
        // however the rest of the expression would have come out.
        Assert.False(Eval("n > 3", ("n", "abc")));
        Assert.False(Eval("NOT (n > 3)", ("n", "abc")));
        Assert.False(Eval("n > 3 OR a = 'x'", ("n", "abc"), ("a", "x")));
        Assert.False(Eval("a = 'x' AND n = 3", ("n", "abc"), ("a", "x")));
        Assert.False(Eval("n > 3", ("n", "3.5")));   // an int literal reads the property as an int
        Assert.True(Eval("n > 3.0", ("n", "3.5")));  // a decimal one as a double
        Assert.True(Eval("n > 3.0", ("n", " 3.5 "))); // Double.valueOf trims blanks
        Assert.False(Eval("n = 3", ("n", " 3")));    // Integer.valueOf does not
        // Left to right: what decides before the failure is reached decides.
        Assert.True(Eval("a = 'x' OR n > 3", ("n", "abc"), ("a", "x")));
        Assert.False(Eval("a = 'y' AND n > 3", ("n", "abc"), ("a", "x")));
        // Two properties ordered: both as doubles.
        Assert.True(Eval("p > q", ("p", "10"), ("q", "9.5")));
        Assert.False(Eval("p > q", ("p", "10"), ("q", "nine")));
        // Two properties compared for equality: as strings.
        Assert.True(Eval("p = q", ("p", "v"), ("q", "v")));
        Assert.False(Eval("p = q", ("p", "10"), ("q", "10.0")));
    }

    [Fact]
    public void NOT_binds_tighter_than_a_comparison_as_in_apaches_grammar()
    {
        // (NOT a) = 'x': never a match (Apache fails it), while NOT (a = 'x') is the negation.
        Assert.False(Eval("NOT a = 'y'", ("a", "x")));
        Assert.True(Eval("NOT (a = 'y')", ("a", "x")));
    }

    [Fact]
    public void TAGS_and_KEYS_of_a_stored_message_are_properties()
    {
        var m = new StoredMessage
        {
            Topic = "T", MessageId = "id", Tag = "TagA", Keys = ["k1", "k2"],
            Properties = new Dictionary<string, string> { ["region"] = "eu" }, Body = Encoding.UTF8.GetBytes("b"),
        };
        Assert.True(SqlFilter.Parse("TAGS = 'TagA' AND region = 'eu'").Matches(m));
        Assert.True(SqlFilter.Parse("TAGS IN ('TagB', 'TagA')").Matches(m));
        Assert.True(SqlFilter.Parse("KEYS CONTAINS 'k2'").Matches(m));
        Assert.False(SqlFilter.Parse("TAGS = 'TagB'").Matches(m));
        Assert.False(SqlFilter.Parse("TAGS IS NOT NULL").Matches(new StoredMessage { Topic = "T", MessageId = "x" }));
    }

    [Theory]
    [InlineData("", "empty", 1)]
    [InlineData("   ", "empty", 1)]
    [InlineData("a = ", "expected a property, a literal or '(' but found end of expression", 5)]
    [InlineData("a = 'x' AND", "end of expression", 12)]
    [InlineData("a = 'x' b = 'y'", "unexpected 'b'", 9)]
    [InlineData("(a = 'x'", "expected ')'", 9)]
    [InlineData("a = 'x')", "unexpected ')'", 8)]
    [InlineData("a = 'unterminated", "unterminated string literal", 5)]
    [InlineData("a == 'x'", "'='", 4)]
    [InlineData("a != 'x'", "unexpected character '!'", 3)]
    [InlineData("a = #", "unexpected character '#'", 5)]
    [InlineData("a = NULL", "use IS NULL", 3)]
    [InlineData("a > 'x'", "'x' cannot be compared with >", 5)]
    [InlineData("a > TRUE", "TRUE cannot be compared with >", 5)]
    [InlineData("a BETWEEN 5 AND 1", "low bound 5 must not be above its high bound 1", 11)]
    [InlineData("a BETWEEN 'a' AND 'b'", "cannot be compared with >=", 11)]
    [InlineData("a BETWEEN 1 2", "expected AND of BETWEEN", 13)]
    [InlineData("a IN ()", "expected a string literal in the IN list", 7)]
    [InlineData("a IN (1, 2)", "expected a string literal in the IN list", 7)]
    [InlineData("a IN ('x' 'y')", "expected ',' or ')'", 11)]
    [InlineData("'x' IN ('x')", "IN needs a property", 5)]
    [InlineData("a CONTAINS b", "expected a string literal after CONTAINS", 12)]
    [InlineData("'x'", "is not a condition", 1)]
    [InlineData("a = 'x' AND 5", "is not a condition", 13)]
    [InlineData("a IS 'x'", "NULL or NOT NULL after IS", 6)]
    [InlineData("a > 0.0", "smallest positive double", 5)]
    [InlineData("a = 99999999999999999999", "out of range", 5)]
    [InlineData("a = 007", "starts with 0", 5)]
    [InlineData("a = 3abc", "malformed number", 5)]
    [InlineData("a = 'x' /* open", "unterminated comment", 9)]
    [InlineData("a > 1 > 2", "a condition cannot be compared with >", 7)]
    [InlineData("TRUE = 3", "TRUE cannot be compared with 3", 6)]
    public void Bad_expressions_are_refused_with_what_and_where(string sql, string what, int position)
    {
        var error = ParseError(sql);
        Assert.Contains(what, error, StringComparison.Ordinal);
        Assert.EndsWith($"at position {position}", error, StringComparison.Ordinal);
    }

    [Fact]
    public void Deep_nesting_is_refused_cleanly_never_a_stack_overflow()
    {
        // Far past any real filter and far past the stack's depth if the parser recursed on it unchecked.
        foreach (var sql in new[]
        {
            new string('(', 200_000) + "a = 'x'" + new string(')', 200_000)[..(SqlFilter.MaxLength / 2)],
            string.Concat(Enumerable.Repeat("NOT ", 4000)) + "(a = 'x')",
            string.Concat(Enumerable.Repeat("- ", 5_000)) + "1 = a", // "- -" (two "-" make a comment)
        })
        {
            var clipped = sql.Length > SqlFilter.MaxLength ? sql[..SqlFilter.MaxLength] : sql;
            Assert.Contains($"nested deeper than {SqlFilter.MaxDepth}", ParseError(clipped), StringComparison.Ordinal);
        }
        // A chain of comparisons of comparisons is a tree that deep without any parenthesis.
        var chain = "a = 'x'" + string.Concat(Enumerable.Repeat(" = TRUE", 1000));
        Assert.Contains("nested deeper than", ParseError(chain), StringComparison.Ordinal);
        // Just inside the limit parses and evaluates.
        int depth = SqlFilter.MaxDepth - 1;
        Assert.True(Eval(new string('(', depth) + "a = 'x'" + new string(')', depth), ("a", "x")));
    }

    [Fact]
    public void A_long_flat_OR_or_AND_chain_is_not_nesting_and_evaluates_without_recursion()
    {
        // 1000 alternatives: one level of the tree, however long (Apache nests pairs; the result is the same).
        var or = string.Join(" OR ", Enumerable.Range(0, 1000).Select(i => $"a = 'v{i}'"));
        Assert.True(or.Length < SqlFilter.MaxLength);
        Assert.True(Eval(or, ("a", "v999")));
        Assert.False(Eval(or, ("a", "w")));
        var and = string.Join(" AND ", Enumerable.Range(0, 1000).Select(_ => "a = 'v'"));
        Assert.True(Eval(and, ("a", "v")));
    }

    [Fact]
    public void Too_long_an_expression_is_refused()
    {
        var sql = "a IN (" + string.Join(",", Enumerable.Range(0, 5000).Select(i => $"'{i}'")) + ")";
        Assert.True(sql.Length > SqlFilter.MaxLength);
        Assert.Contains($"more than the {SqlFilter.MaxLength} allowed", ParseError(sql), StringComparison.Ordinal);
        Assert.False(SqlFilter.TryParse(null, out _, out var missing));
        Assert.Contains("missing", missing, StringComparison.Ordinal);
    }

    [Fact]
    public void Garbage_input_is_refused_or_parsed_never_thrown_otherwise()
    {
        var random = new Random(12345);
        const string alphabet = "ab'() =<>!,.0123456789eEL-+/*\n NOT AND OR IN IS NULL BETWEEN CONTAINS TRUE";
        for (int i = 0; i < 20_000; i++)
        {
            var chars = new char[random.Next(0, 40)];
            for (int k = 0; k < chars.Length; k++) chars[k] = alphabet[random.Next(alphabet.Length)];
            var sql = new string(chars);
            if (SqlFilter.TryParse(sql, out var filter, out var error))
                filter!.Matches(name => name == "a" ? "1" : null);
            else
                Assert.Contains("SQL92 expression", error, StringComparison.Ordinal);
        }
    }
}
