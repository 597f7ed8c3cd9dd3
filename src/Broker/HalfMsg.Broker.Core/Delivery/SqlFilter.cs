using System.Collections.Concurrent;
using System.Globalization;
using HalfMsg.Broker.Core.Model;

namespace HalfMsg.Broker.Core.Delivery;

/// <summary>
/// RocketMQ's SQL92 property filter (<c>ExpressionType.SQL92</c>, <c>MessageSelector.bySql</c>): a boolean expression
/// over a message's properties, which are strings. The grammar and the semantics are Apache's (its filter module's
/// SelectorParser, ComparisonExpression, LogicExpression, UnaryExpression), written here by hand:
/// <list type="bullet">
/// <item>identifiers name properties (<c>[A-Za-z_$][A-Za-z0-9_$]*</c>, case-sensitive; the system properties
/// <c>TAGS</c> and <c>KEYS</c> too); literals are <c>'strings'</c> (<c>''</c> is a quote), integers (an <c>L</c>
/// suffix allowed), decimals (<c>1.5</c>, <c>.5</c>, <c>5E3</c>), TRUE, FALSE, NULL; keywords in any case.</item>
/// <item>operators: <c>= &lt;&gt; &gt; &gt;= &lt; &lt;=</c>, [NOT] BETWEEN a AND b, [NOT] IN ('a', ...), IS [NOT] NULL,
/// AND, OR, NOT, unary + and -, parentheses, [NOT] CONTAINS / STARTSWITH / ENDSWITH 'text'; <c>--</c> and
/// <c>/* */</c> comments.</item>
/// <item>NOT binds tighter than a comparison, as in Apache's grammar: <c>NOT a = 'x'</c> is <c>(NOT a) = 'x'</c>,
/// which never matches; write <c>NOT (a = 'x')</c>.</item>
/// <item>three-valued: a comparison with a missing property is unknown, and NOT, AND and OR keep it unknown as SQL
/// does; only a true result matches. So <c>a &lt;&gt; 'x'</c> and <c>a NOT IN ('x')</c> do not match a message
/// without <c>a</c>. [NOT] CONTAINS, STARTSWITH and ENDSWITH of a missing property are false, not unknown (Apache's).</item>
/// <item>a comparison with a number converts the property to the number's type (an integer literal: a Java int or
/// long; a decimal: a double); <c>&gt;</c> <c>&lt;</c> of two properties converts both to doubles. A property that
/// does not convert (<c>a &gt; 3</c> with <c>a = '3.5'</c> or <c>'abc'</c>) fails the whole evaluation, as Apache's
/// exception does: the message does not match, whatever else the expression says.</item>
/// </list>
/// A bad expression is refused at parse with <see cref="SqlFilterException"/>, naming the position (1-based) where it
/// went wrong. An expression longer than <see cref="MaxLength"/> characters or nested deeper than
/// <see cref="MaxDepth"/> is refused too: the parser and the evaluator recurse, and a client's expression must never
/// overflow the broker's stack. AND and OR chains are flat (one level however long), so only nesting counts.
/// </summary>
public sealed class SqlFilter
{
    /// <summary>Longest expression accepted, in characters.</summary>
    public const int MaxLength = 16 * 1024;

    /// <summary>Deepest nesting accepted (parentheses, NOT, signs, and comparisons of comparisons).</summary>
    public const int MaxDepth = 100;

    /// <summary>The property a message's tag is seen under (Apache's MessageConst.PROPERTY_TAGS).</summary>
    public const string TagsProperty = "TAGS";

    /// <summary>The property a message's keys are seen under, space-separated (Apache's PROPERTY_KEYS).</summary>
    public const string KeysProperty = "KEYS";

    private const int CacheSize = 256;
    private static readonly ConcurrentDictionary<string, SqlFilter> Cache = new(StringComparer.Ordinal);

    private readonly Node _root;

    private SqlFilter(string expression, Node root)
    {
        Expression = expression;
        _root = root;
    }

    /// <summary>The expression as given.</summary>
    public string Expression { get; }

    /// <summary>Parses an expression; throws <see cref="SqlFilterException"/> when it is not valid.</summary>
    public static SqlFilter Parse(string expression)
    {
        ArgumentNullException.ThrowIfNull(expression);
        if (Cache.TryGetValue(expression, out var cached)) return cached;
        var filter = new SqlFilter(expression, new Parser(expression).ParseAll());
        // Every receive and pull names its filter again: parse each expression once. Bounded (clients choose the
        // expressions): the cache is emptied when full rather than kept in order, as a few live expressions come back.
        if (Cache.Count >= CacheSize) Cache.Clear();
        Cache.TryAdd(expression, filter);
        return filter;
    }

    /// <summary>Parses an expression; false with the reason when it is not valid.</summary>
    public static bool TryParse(string? expression, out SqlFilter? filter, out string? error)
    {
        filter = null;
        error = null;
        if (expression is null)
        {
            error = "SQL92 expression is missing";
            return false;
        }
        try
        {
            filter = Parse(expression);
            return true;
        }
        catch (SqlFilterException ex)
        {
            error = ex.Message;
            return false;
        }
    }

    /// <summary>Whether a message with these properties matches: only a true result does (false, unknown and a failed
    /// conversion do not). <paramref name="property"/> gives a property's value, or null when it has none.</summary>
    public bool Matches(Func<string, string?> property)
    {
        var v = _root.Eval(property);
        return v.Kind == Kind.Bool && v.Bool;
    }

    /// <summary>Whether a stored message matches: its properties, and its tag and keys as <see cref="TagsProperty"/> and
    /// <see cref="KeysProperty"/> when its properties do not carry them.</summary>
    public bool Matches(StoredMessage message) => Matches(name =>
    {
        if (message.Properties.TryGetValue(name, out var value)) return value;
        if (name == TagsProperty) return message.Tag;
        if (name == KeysProperty && message.Keys.Count > 0) return string.Join(' ', message.Keys);
        return null;
    });

    public override string ToString() => Expression;

    // ------------------------------------------------------------ values

    private enum Kind : byte { Null, Bool, Int, Long, Double, String, Error }

    /// <summary>A value as Apache's evaluator sees it: null, Boolean, Integer, Long, Double or String; or the failure
    /// that in Apache is an exception and ends the evaluation (no match).</summary>
    private readonly struct Value
    {
        public readonly Kind Kind;
        public readonly long Integer;
        public readonly double Double;
        public readonly string? String;

        private Value(Kind kind, long integer = 0, double d = 0, string? s = null)
        {
            Kind = kind;
            Integer = integer;
            Double = d;
            String = s;
        }

        public static readonly Value Null = new(Kind.Null);
        public static readonly Value True = new(Kind.Bool, 1);
        public static readonly Value False = new(Kind.Bool, 0);
        public static readonly Value Error = new(Kind.Error);

        public static Value Of(bool b) => b ? True : False;
        public static Value OfInt(int i) => new(Kind.Int, i);
        public static Value OfLong(long l) => new(Kind.Long, l);
        public static Value OfDouble(double d) => new(Kind.Double, 0, d);
        public static Value OfString(string? s) => s is null ? Null : new(Kind.String, 0, 0, s);

        public bool Bool => Integer != 0;
        public bool IsNumber => Kind is Kind.Int or Kind.Long or Kind.Double;
        public double AsDouble => Kind == Kind.Double ? Double : Integer;

        public override string ToString() => Kind switch
        {
            Kind.Null => "NULL",
            Kind.Bool => Bool ? "TRUE" : "FALSE",
            Kind.String => "'" + String!.Replace("'", "''", StringComparison.Ordinal) + "'",
            Kind.Double => Double.ToString("R", CultureInfo.InvariantCulture),
            _ => Integer.ToString(CultureInfo.InvariantCulture),
        };
    }

    /// <summary>Java's Double.compareTo: -0.0 below 0.0, NaN above everything and equal to itself.</summary>
    private static int CompareDoubles(double a, double b)
    {
        if (a < b) return -1;
        if (a > b) return 1;
        long x = BitConverter.DoubleToInt64Bits(double.IsNaN(a) ? double.NaN : a);
        long y = BitConverter.DoubleToInt64Bits(double.IsNaN(b) ? double.NaN : b);
        return x == y ? 0 : x < y ? -1 : 1;
    }

    /// <summary>Apache's ComparisonExpression.__compare with string conversion on (as its parser sets it): values of
    /// two types are converted to one, a property's string to the other side's number or boolean. A string that does not
    /// convert fails (null); types that do not convert compare as -1, as Apache's do.</summary>
    private static int? Compare(in Value l, in Value r)
    {
        if (l.Kind == r.Kind)
        {
            return l.Kind switch
            {
                Kind.String => Math.Sign(string.CompareOrdinal(l.String, r.String)),
                Kind.Double => CompareDoubles(l.Double, r.Double),
                _ => l.Integer.CompareTo(r.Integer),
            };
        }
        switch (l.Kind)
        {
            case Kind.Bool:
                // Apache casts the Boolean to a String here, and the ClassCastException ends the evaluation.
                return r.Kind == Kind.String ? null : -1;
            case Kind.Int or Kind.Long or Kind.Double when r.IsNumber:
                return l.Kind == Kind.Double || r.Kind == Kind.Double ? CompareDoubles(l.AsDouble, r.AsDouble) : l.Integer.CompareTo(r.Integer);
            case Kind.Int or Kind.Long or Kind.Double when r.Kind == Kind.String:
                return Convert(r.String!, l.Kind) is { } rv ? Compare(l, rv) : null;
            case Kind.String when r.Kind == Kind.Bool:
                return Value.Of(string.Equals(l.String, "true", StringComparison.OrdinalIgnoreCase)).Integer.CompareTo(r.Integer);
            case Kind.String when r.IsNumber:
                return Convert(l.String!, r.Kind) is { } lv ? Compare(lv, r) : null;
            default:
                return -1;
        }
    }

    /// <summary>A property's string as Java's Integer.valueOf, Long.valueOf or Double.valueOf reads it; null when it does not.</summary>
    private static Value? Convert(string s, Kind to)
    {
        switch (to)
        {
            case Kind.Int:
                return int.TryParse(s, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out int i) ? Value.OfInt(i) : null;
            case Kind.Long:
                return long.TryParse(s, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long l) ? Value.OfLong(l) : null;
            default:
                return ParseJavaDouble(s) is double d ? Value.OfDouble(d) : null;
        }
    }

    /// <summary>Java's Double.valueOf for decimal text: blanks around it, a sign, NaN, Infinity, digits with a point and
    /// an exponent, an f/F/d/D suffix. (Java's hexadecimal form is not read: such a property fails as text does.)</summary>
    private static double? ParseJavaDouble(string text)
    {
        ReadOnlySpan<char> s = text.AsSpan();
        int a = 0, b = s.Length;
        while (a < b && s[a] <= ' ') a++;
        while (b > a && s[b - 1] <= ' ') b--;
        s = s[a..b];
        if (s.Length == 0) return null;
        int p = s[0] is '+' or '-' ? 1 : 0;
        var rest = s[p..];
        if (rest.SequenceEqual("NaN")) return double.NaN;
        if (rest.SequenceEqual("Infinity")) return s[0] == '-' ? double.NegativeInfinity : double.PositiveInfinity;
        if (rest.Length > 0 && rest[^1] is 'f' or 'F' or 'd' or 'D') rest = rest[..^1];
        int digits = 0, k = 0;
        while (k < rest.Length && char.IsAsciiDigit(rest[k])) { k++; digits++; }
        if (k < rest.Length && rest[k] == '.')
        {
            k++;
            while (k < rest.Length && char.IsAsciiDigit(rest[k])) { k++; digits++; }
        }
        if (digits == 0) return null;
        if (k < rest.Length && rest[k] is 'e' or 'E')
        {
            k++;
            if (k < rest.Length && rest[k] is '+' or '-') k++;
            int exp = 0;
            while (k < rest.Length && char.IsAsciiDigit(rest[k])) { k++; exp++; }
            if (exp == 0) return null;
        }
        if (k != rest.Length) return null;
        var number = s[0] == '-' ? "-" + rest.ToString() : rest.ToString();
        return double.Parse(number, NumberStyles.Float, CultureInfo.InvariantCulture);
    }

    // ------------------------------------------------------------ the tree

    private abstract class Node
    {
        /// <summary>Height of the tree below and including this node (the evaluator's recursion).</summary>
        public int Depth = 1;
        /// <summary>Apache's BooleanExpression: what AND, OR and NOT take, and what a whole filter must be.</summary>
        public virtual bool IsBoolean => false;
        public abstract Value Eval(Func<string, string?> property);
    }

    private sealed class Constant(Value value) : Node
    {
        public readonly Value Value = value;
        public override bool IsBoolean => Value.Kind is Kind.Bool or Kind.Null;
        public override Value Eval(Func<string, string?> property) => Value;
        public override string ToString() => Value.ToString();
    }

    private sealed class Property(string name) : Node
    {
        public readonly string Name = name;
        public override Value Eval(Func<string, string?> property) => Value.OfString(property(Name));
        public override string ToString() => Name;
    }

    private sealed class Negate(Node operand) : Node
    {
        public override Value Eval(Func<string, string?> property)
        {
            var v = operand.Eval(property);
            return v.Kind switch
            {
                Kind.Error => v,
                Kind.Int => Value.OfInt(unchecked(-(int)v.Integer)),
                Kind.Long => Value.OfLong(unchecked(-v.Integer)),
                Kind.Double => Value.OfDouble(-v.Double),
                _ => Value.Null, // not a number: Apache's negation gives null
            };
        }

        public override string ToString() => "-" + operand;
    }

    /// <summary>A property where a boolean is wanted (Apache's BooleanCast): a property's value is a string, so false;
    /// unknown when missing.</summary>
    private sealed class BooleanCast(Node operand) : Node
    {
        public override bool IsBoolean => true;
        public override Value Eval(Func<string, string?> property)
        {
            var v = operand.Eval(property);
            return v.Kind is Kind.Error or Kind.Null or Kind.Bool ? v : Value.False;
        }
    }

    private sealed class Not(Node operand) : Node
    {
        public override bool IsBoolean => true;
        public override Value Eval(Func<string, string?> property)
        {
            var v = operand.Eval(property);
            return v.Kind == Kind.Bool ? Value.Of(!v.Bool) : v.Kind == Kind.Error ? v : Value.Null;
        }
    }

    /// <summary>AND or OR over a chain, left to right, stopping at the first operand that decides (false for AND, true
    /// for OR) as Apache's nested pairs do; unknown when an operand was unknown and none decided.</summary>
    private sealed class Logic(bool isAnd, List<Node> operands) : Node
    {
        public override bool IsBoolean => true;
        public override Value Eval(Func<string, string?> property)
        {
            bool unknown = false;
            foreach (var operand in operands)
            {
                var v = operand.Eval(property);
                if (v.Kind == Kind.Error) return v;
                if (v.Kind == Kind.Bool && v.Bool != isAnd) return v; // false for AND, true for OR
                if (v.Kind != Kind.Bool) unknown = true;
            }
            return unknown ? Value.Null : Value.Of(isAnd);
        }
    }

    /// <summary><c>=</c> (Apache's doCreateEqual), also what IS NULL is.</summary>
    private sealed class Equal(Node left, Node right) : Node
    {
        public override bool IsBoolean => true;
        public override Value Eval(Func<string, string?> property)
        {
            var l = left.Eval(property);
            if (l.Kind == Kind.Error) return l;
            var r = right.Eval(property);
            if (r.Kind == Kind.Error) return r;
            bool ln = l.Kind == Kind.Null, rn = r.Kind == Kind.Null;
            if (ln || rn) return ln && rn ? Value.True : ln ? Value.Null : Value.False;
            if (l.Kind == r.Kind && (l.Kind == Kind.String ? l.String == r.String
                    : l.Kind == Kind.Double ? BitConverter.DoubleToInt64Bits(l.Double) == BitConverter.DoubleToInt64Bits(r.Double) || (double.IsNaN(l.Double) && double.IsNaN(r.Double))
                    : l.Integer == r.Integer))
                return Value.True;
            return Compare(l, r) is int c ? Value.Of(c == 0) : Value.Error;
        }
    }

    /// <summary><c>&gt; &gt;= &lt; &lt;=</c>: unknown when either side is missing; two strings compare as doubles.</summary>
    private sealed class Relational(Node left, Node right, string op) : Node
    {
        public override bool IsBoolean => true;
        public override Value Eval(Func<string, string?> property)
        {
            var l = left.Eval(property);
            if (l.Kind is Kind.Error or Kind.Null) return l;
            var r = right.Eval(property);
            if (r.Kind is Kind.Error or Kind.Null) return r;
            int? c;
            if (l.Kind == Kind.String && r.Kind == Kind.String)
                c = ParseJavaDouble(l.String!) is double a && ParseJavaDouble(r.String!) is double b ? CompareDoubles(a, b) : null;
            else
                c = Compare(l, r);
            if (c is not int n) return Value.Error;
            return Value.Of(op switch { ">" => n > 0, ">=" => n >= 0, "<" => n < 0, _ => n <= 0 });
        }
    }

    private sealed class In(Node property, HashSet<string> values, bool not) : Node
    {
        public override bool IsBoolean => true;
        public override Value Eval(Func<string, string?> lookup)
        {
            var v = property.Eval(lookup);
            if (v.Kind != Kind.String) return v.Kind == Kind.Error ? v : Value.Null;
            return Value.Of(values.Contains(v.String!) ^ not);
        }
    }

    /// <summary>[NOT] CONTAINS, STARTSWITH, ENDSWITH: false (not unknown) for a missing property, a value that is not
    /// a string, and an empty search text, in both the plain and the NOT form (Apache's).</summary>
    private sealed class TextMatch(Node operand, string op, string search, bool not) : Node
    {
        public override bool IsBoolean => true;
        public override Value Eval(Func<string, string?> property)
        {
            if (search.Length == 0) return Value.False;
            var v = operand.Eval(property);
            if (v.Kind == Kind.Error) return v;
            if (v.Kind != Kind.String) return Value.False;
            bool found = op switch
            {
                "CONTAINS" => v.String!.Contains(search, StringComparison.Ordinal),
                "STARTSWITH" => v.String!.StartsWith(search, StringComparison.Ordinal),
                _ => v.String!.EndsWith(search, StringComparison.Ordinal),
            };
            return Value.Of(found ^ not);
        }
    }

    // ------------------------------------------------------------ the parser

    private enum T
    {
        End, LParen, RParen, Comma, Eq, Ne, Gt, Ge, Lt, Le, Plus, Minus, String, Integer, Decimal, Identifier,
        Not, And, Or, Between, In, True, False, Null, Is, Contains, StartsWith, EndsWith,
    }

    private readonly record struct Token(T Type, int Position, string Text);

    private static readonly Dictionary<string, T> Keywords = new(StringComparer.OrdinalIgnoreCase)
    {
        ["NOT"] = T.Not, ["AND"] = T.And, ["OR"] = T.Or, ["BETWEEN"] = T.Between, ["IN"] = T.In, ["TRUE"] = T.True,
        ["FALSE"] = T.False, ["NULL"] = T.Null, ["IS"] = T.Is, ["CONTAINS"] = T.Contains, ["STARTSWITH"] = T.StartsWith,
        ["ENDSWITH"] = T.EndsWith,
    };

    private sealed class Parser
    {
        private readonly List<Token> _tokens;
        private int _next;
        private int _nesting;

        public Parser(string text)
        {
            if (text.Length > MaxLength)
                throw new SqlFilterException($"SQL92 expression is {text.Length} characters long, more than the {MaxLength} allowed");
            _tokens = Lex(text);
        }

        private Token Current => _tokens[_next];

        private static SqlFilterException Error(string what, int position) => new($"SQL92 expression: {what} at position {position + 1}");

        private static string Describe(Token t) => t.Type == T.End ? "end of expression" : $"'{t.Text}'";

        private SqlFilterException Unexpected(string? expected = null)
            => Error(expected is null ? $"unexpected {Describe(Current)}" : $"expected {expected} but found {Describe(Current)}", Current.Position);

        public Node ParseAll()
        {
            if (Current.Type == T.End) throw Error("the expression is empty", 0);
            var root = AsBoolean(ParseOr(), 0);
            if (Current.Type != T.End) throw Unexpected();
            return root;
        }

        private T Take() => _tokens[_next++].Type;

        private Node ParseOr()
        {
            int at = Current.Position;
            var first = ParseAnd();
            if (Current.Type != T.Or) return first;
            var operands = new List<Node> { AsBoolean(first, at) };
            while (Current.Type == T.Or)
            {
                Take();
                at = Current.Position;
                operands.Add(AsBoolean(ParseAnd(), at));
            }
            return Deeper(new Logic(false, operands), operands);
        }

        private Node ParseAnd()
        {
            int at = Current.Position;
            var first = ParseEquality();
            if (Current.Type != T.And) return first;
            var operands = new List<Node> { AsBoolean(first, at) };
            while (Current.Type == T.And)
            {
                Take();
                at = Current.Position;
                operands.Add(AsBoolean(ParseEquality(), at));
            }
            return Deeper(new Logic(true, operands), operands);
        }

        private Node ParseEquality()
        {
            var left = ParseComparison();
            while (true)
            {
                var op = Current;
                switch (op.Type)
                {
                    case T.Eq:
                        Take();
                        left = CreateEqual(left, ParseComparison(), op.Position);
                        break;
                    case T.Ne:
                    {
                        Take();
                        var equal = CreateEqual(left, ParseComparison(), op.Position);
                        left = Deeper(new Not(equal), equal);
                        break;
                    }
                    case T.Is:
                        Take();
                        bool not = Current.Type == T.Not;
                        if (not) Take();
                        if (Current.Type != T.Null) throw Unexpected(not ? "NULL after IS NOT" : "NULL or NOT NULL after IS");
                        Take();
                        Node isNull = Deeper(new Equal(left, new Constant(Value.Null)), left);
                        left = not ? Deeper(new Not(isNull), isNull) : isNull;
                        break;
                    default:
                        return left;
                }
            }
        }

        private Node ParseComparison()
        {
            var left = ParseUnary();
            while (true)
            {
                var op = Current;
                bool not = false;
                if (op.Type == T.Not && _tokens[_next + 1].Type is T.Contains or T.StartsWith or T.EndsWith or T.Between or T.In)
                {
                    not = true;
                    Take();
                    op = Current;
                }
                switch (op.Type)
                {
                    case T.Gt or T.Ge or T.Lt or T.Le:
                    {
                        Take();
                        int at = Current.Position;
                        left = CreateRelational(left, op.Position, ParseUnary(), at, op.Text);
                        break;
                    }
                    case T.Contains or T.StartsWith or T.EndsWith:
                        Take();
                        left = Deeper(new TextMatch(left, op.Text.ToUpperInvariant(), StringLiteral($"a string literal after {op.Text.ToUpperInvariant()}"), not), left);
                        break;
                    case T.Between:
                    {
                        Take();
                        int lowAt = Current.Position;
                        var low = ParseUnary();
                        if (Current.Type != T.And) throw Unexpected("AND of BETWEEN");
                        Take();
                        int highAt = Current.Position;
                        var high = ParseUnary();
                        left = not ? CreateNotBetween(left, op.Position, low, lowAt, high, highAt) : CreateBetween(left, op.Position, low, lowAt, high, highAt);
                        break;
                    }
                    case T.In:
                    {
                        Take();
                        if (left is not Property)
                            throw Error($"IN needs a property on its left, not {left}", op.Position);
                        if (Current.Type != T.LParen) throw Unexpected("'(' after IN");
                        Take();
                        var values = new HashSet<string>(StringComparer.Ordinal) { StringLiteral("a string literal in the IN list") };
                        while (Current.Type == T.Comma)
                        {
                            Take();
                            values.Add(StringLiteral("a string literal in the IN list"));
                        }
                        if (Current.Type != T.RParen) throw Unexpected("',' or ')' in the IN list");
                        Take();
                        left = Deeper(new In(left, values, not), left);
                        break;
                    }
                    default:
                        return left;
                }
            }
        }

        private Node ParseUnary()
        {
            if (++_nesting > MaxDepth) throw Error($"the expression is nested deeper than {MaxDepth} levels", Current.Position);
            try
            {
                switch (Current.Type)
                {
                    case T.Plus:
                        Take();
                        return ParseUnary();
                    case T.Minus:
                    {
                        Take();
                        var operand = ParseUnary();
                        return Deeper(new Negate(operand), operand);
                    }
                    case T.Not:
                    {
                        Take();
                        int at = Current.Position;
                        var operand = AsBoolean(ParseUnary(), at);
                        return Deeper(new Not(operand), operand);
                    }
                    default:
                        return ParsePrimary();
                }
            }
            finally
            {
                _nesting--;
            }
        }

        private Node ParsePrimary()
        {
            var t = Current;
            switch (t.Type)
            {
                case T.String:
                    Take();
                    return new Constant(Value.OfString(t.Text));
                case T.Integer:
                    Take();
                    return new Constant(IntegerLiteral(t));
                case T.Decimal:
                    Take();
                    return new Constant(DecimalLiteral(t));
                case T.True:
                    Take();
                    return new Constant(Value.True);
                case T.False:
                    Take();
                    return new Constant(Value.False);
                case T.Null:
                    Take();
                    return new Constant(Value.Null);
                case T.Identifier:
                    Take();
                    return new Property(t.Text);
                case T.LParen:
                {
                    Take();
                    var inner = ParseOr();
                    if (Current.Type != T.RParen) throw Unexpected("')'");
                    Take();
                    return inner;
                }
                default:
                    throw Unexpected("a property, a literal or '('");
            }
        }

        private string StringLiteral(string expected)
        {
            if (Current.Type != T.String) throw Unexpected(expected);
            return _tokens[_next++].Text;
        }

        /// <summary>Apache's createFromDecimal: a long (an L suffix dropped), an int when it fits.</summary>
        private static Value IntegerLiteral(Token t)
        {
            var digits = t.Text.TrimEnd('l', 'L');
            if (!long.TryParse(digits, NumberStyles.None, CultureInfo.InvariantCulture, out long l))
                throw Error($"integer {t.Text} is out of range (a long: up to {long.MaxValue})", t.Position);
            return l is >= int.MinValue and <= int.MaxValue ? Value.OfInt((int)l) : Value.OfLong(l);
        }

        /// <summary>Apache's createFloat, which refuses what overflows a double and what is below its smallest positive
        /// value (so 0.0 too; write 0).</summary>
        private static Value DecimalLiteral(Token t)
        {
            double d = double.Parse(t.Text, NumberStyles.Float, CultureInfo.InvariantCulture);
            if (double.IsInfinity(d)) throw Error($"number {t.Text} is greater than the largest double", t.Position);
            if (d < double.Epsilon) throw Error($"number {t.Text} is less than the smallest positive double (RocketMQ refuses it; write 0 for zero)", t.Position);
            return Value.OfDouble(d);
        }

        private static Node AsBoolean(Node node, int position)
        {
            if (node.IsBoolean) return node;
            if (node is Property) return Deeper(new BooleanCast(node), node);
            throw Error($"{node} is not a condition (it does not give true or false)", position);
        }

        /// <summary>Apache's checkLessThanOperand: only numbers and properties (or their negation) may be ordered.</summary>
        private static void CheckOrderable(Node node, int position, string op)
        {
            if (node is Constant c ? !c.Value.IsNumber : node.IsBoolean)
                throw Error($"{Show(node)} cannot be compared with {op}; only numbers can", position);
        }

        private static string Show(Node node) => node is Constant or Property or Negate ? node.ToString()! : "a condition";

        private static Node CreateEqual(Node left, Node right, int position)
        {
            // Apache's checkEqualOperand and checkEqualOperandCompatability.
            if (left is Constant { Value.Kind: Kind.Null } || right is Constant { Value.Kind: Kind.Null })
                throw Error("NULL cannot be compared with = or <>; use IS NULL or IS NOT NULL", position);
            if (left is Constant { Value.Kind: Kind.Bool } lc && right is Constant { Value.Kind: not Kind.Bool } rc)
                throw Error($"{lc} cannot be compared with {rc}", position);
            return Deeper(new Equal(left, right), left, right);
        }

        private static Node CreateRelational(Node left, int leftAt, Node right, int rightAt, string op)
        {
            CheckOrderable(left, leftAt, op);
            CheckOrderable(right, rightAt, op);
            return Deeper(new Relational(left, right, op), left, right);
        }

        private static Node CreateBetween(Node value, int at, Node low, int lowAt, Node high, int highAt)
        {
            var ge = CreateRelational(value, at, low, lowAt, ">=");
            var le = CreateRelational(value, at, high, highAt, "<=");
            // As Apache's createBetween: two numbers as bounds must be in order (a property or a sign is not checked).
            if (low is Constant l && high is Constant h && Compare(h.Value, l.Value) is < 0)
                throw Error($"BETWEEN's low bound {l} must not be above its high bound {h}", lowAt);
            return Deeper(new Logic(true, [ge, le]), ge, le);
        }

        private static Node CreateNotBetween(Node value, int at, Node low, int lowAt, Node high, int highAt)
        {
            var lt = CreateRelational(value, at, low, lowAt, "<");
            var gt = CreateRelational(value, at, high, highAt, ">");
            return Deeper(new Logic(false, [lt, gt]), lt, gt);
        }

        /// <summary>Sets a new node's depth from its operands' and refuses a tree the evaluator could not walk safely.</summary>
        private static Node Deeper(Node node, params ReadOnlySpan<Node> operands)
        {
            int depth = 0;
            foreach (var o in operands) depth = Math.Max(depth, o.Depth);
            return SetDepth(node, depth);
        }

        private static Node Deeper(Node node, List<Node> operands)
        {
            int depth = 0;
            foreach (var o in operands) depth = Math.Max(depth, o.Depth);
            return SetDepth(node, depth);
        }

        private static Node SetDepth(Node node, int below)
        {
            node.Depth = below + 1;
            if (node.Depth > MaxDepth * 2)
                throw new SqlFilterException($"SQL92 expression: the expression is nested deeper than {MaxDepth * 2} operations");
            return node;
        }

        // -------------------------------------------------------- the lexer

        private static List<Token> Lex(string s)
        {
            var tokens = new List<Token>();
            int i = 0;
            while (true)
            {
                // Blanks and comments.
                while (i < s.Length)
                {
                    char c = s[i];
                    if (c is ' ' or '\t' or '\n' or '\r' or '\f') i++;
                    else if (c == '-' && i + 1 < s.Length && s[i + 1] == '-')
                    {
                        while (i < s.Length && s[i] is not ('\n' or '\r')) i++;
                    }
                    else if (c == '/' && i + 1 < s.Length && s[i + 1] == '*')
                    {
                        int end = s.IndexOf("*/", i + 2, StringComparison.Ordinal);
                        if (end < 0) throw Error("unterminated comment", i);
                        i = end + 2;
                    }
                    else break;
                }
                if (i == s.Length)
                {
                    tokens.Add(new Token(T.End, i, ""));
                    return tokens;
                }
                int start = i;
                char ch = s[i];
                switch (ch)
                {
                    case '(': tokens.Add(new Token(T.LParen, i++, "(")); continue;
                    case ')': tokens.Add(new Token(T.RParen, i++, ")")); continue;
                    case ',': tokens.Add(new Token(T.Comma, i++, ",")); continue;
                    case '=': tokens.Add(new Token(T.Eq, i++, "=")); continue;
                    case '+': tokens.Add(new Token(T.Plus, i++, "+")); continue;
                    case '-': tokens.Add(new Token(T.Minus, i++, "-")); continue;
                    case '>':
                        if (i + 1 < s.Length && s[i + 1] == '=') { tokens.Add(new Token(T.Ge, i, ">=")); i += 2; }
                        else tokens.Add(new Token(T.Gt, i++, ">"));
                        continue;
                    case '<':
                        if (i + 1 < s.Length && s[i + 1] == '=') { tokens.Add(new Token(T.Le, i, "<=")); i += 2; }
                        else if (i + 1 < s.Length && s[i + 1] == '>') { tokens.Add(new Token(T.Ne, i, "<>")); i += 2; }
                        else tokens.Add(new Token(T.Lt, i++, "<"));
                        continue;
                    case '\'':
                    {
                        var text = new System.Text.StringBuilder();
                        i++;
                        while (true)
                        {
                            if (i == s.Length) throw Error("unterminated string literal", start);
                            if (s[i] == '\'')
                            {
                                if (i + 1 < s.Length && s[i + 1] == '\'') { text.Append('\''); i += 2; continue; }
                                i++;
                                break;
                            }
                            text.Append(s[i++]);
                        }
                        tokens.Add(new Token(T.String, start, text.ToString()));
                        continue;
                    }
                }
                if (char.IsAsciiDigit(ch) || (ch == '.' && i + 1 < s.Length && char.IsAsciiDigit(s[i + 1])))
                {
                    tokens.Add(LexNumber(s, ref i));
                    continue;
                }
                if (char.IsAsciiLetter(ch) || ch is '_' or '$')
                {
                    while (i < s.Length && (char.IsAsciiLetterOrDigit(s[i]) || s[i] is '_' or '$')) i++;
                    var word = s[start..i];
                    tokens.Add(new Token(Keywords.TryGetValue(word, out var kw) ? kw : T.Identifier, start, word));
                    continue;
                }
                throw Error($"unexpected character '{ch}'", i);
            }
        }

        private static Token LexNumber(string s, ref int i)
        {
            int start = i;
            while (i < s.Length && char.IsAsciiDigit(s[i])) i++;
            bool isDecimal = false;
            if (i < s.Length && s[i] == '.')
            {
                isDecimal = true;
                i++;
                while (i < s.Length && char.IsAsciiDigit(s[i])) i++;
            }
            if (i < s.Length && s[i] is 'e' or 'E')
            {
                int j = i + 1;
                if (j < s.Length && s[j] is '+' or '-') j++;
                if (j < s.Length && char.IsAsciiDigit(s[j]))
                {
                    isDecimal = true;
                    i = j;
                    while (i < s.Length && char.IsAsciiDigit(s[i])) i++;
                }
            }
            if (!isDecimal)
            {
                if (s[start] == '0' && i - start > 1) throw Error($"integer {s[start..i]} starts with 0", start);
                if (i < s.Length && s[i] is 'l' or 'L') i++;
            }
            if (i < s.Length && (char.IsAsciiLetterOrDigit(s[i]) || s[i] is '_' or '$' or '.'))
                throw Error($"malformed number {s[start..(i + 1)]}", start);
            return new Token(isDecimal ? T.Decimal : T.Integer, start, s[start..i]);
        }
    }
}

/// <summary>An SQL92 filter expression that cannot be parsed; the message names what and where.</summary>
public sealed class SqlFilterException(string message) : Exception(message);
