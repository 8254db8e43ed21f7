namespace PromptEngine.Tests.Reference;

/// <summary>Prefix tuning's reparameterisation MLP in double (PEFT's PrefixEncoder with prefix_projection), with the
/// parameters flat in the order the library keeps them: E (Pv, d), W1 (H, d), b1 (H), W2 (O, H), b2 (O), O = L·2·d;
/// and the permutation between a deep prompt's PEFT layout (Pv, parts, d) and the engine's (parts, Pv, d).</summary>
public static class PrefixProjectionReference
{
    /// <summary>engine[part, token, c] = peft[token, part, c].</summary>
    public static double[] ToEngineLayout(double[] peft, int pv, int parts, int d)
    {
        var engine = new double[peft.Length];
        for (int token = 0; token < pv; token++)
            for (int part = 0; part < parts; part++)
                for (int c = 0; c < d; c++)
                    engine[(part * pv + token) * d + c] = peft[(token * parts + part) * d + c];
        return engine;
    }

    /// <summary>peft[token, part, c] = engine[part, token, c].</summary>
    public static double[] ToPeftLayout(double[] engine, int pv, int parts, int d)
    {
        var peft = new double[engine.Length];
        for (int token = 0; token < pv; token++)
            for (int part = 0; part < parts; part++)
                for (int c = 0; c < d; c++)
                    peft[(token * parts + part) * d + c] = engine[(part * pv + token) * d + c];
        return peft;
    }

    /// <summary>Slices the flat parameters into E, W1, b1, W2, b2.</summary>
    public static (double[] E, double[] W1, double[] B1, double[] W2, double[] B2) Split(double[] parameters, int pv, int d, int h, int width)
    {
        int at = 0;
        double[] Take(int count) { var part = parameters[at..(at + count)]; at += count; return part; }
        var result = (Take(pv * d), Take(h * d), Take(h), Take(width * h), Take(width));
        if (at != parameters.Length) throw new ArgumentException($"{parameters.Length} parameters, expected {at}");
        return result;
    }

    /// <summary>Output (Pv, O) in PEFT layout = W2·tanh(W1·E + b1) + b2, row by row.</summary>
    public static double[] Forward(double[] parameters, int pv, int d, int h, int width)
    {
        var (e, w1, b1, w2, b2) = Split(parameters, pv, d, h, width);
        var pre = new double[pv * h];
        var hidden = new double[pv * h];
        var output = new double[pv * width];
        LinearReference.Forward(pre, e, w1, b1, pv, d, h);
        TanhReference.Forward(hidden, pre, pre.Length);
        LinearReference.Forward(output, hidden, w2, b2, pv, h, width);
        return output;
    }

    /// <summary>dLoss/dParameters (flat, same order) for dLoss/dOutput (Pv, O) in PEFT layout.</summary>
    public static double[] Backward(double[] parameters, double[] dOutput, int pv, int d, int h, int width)
    {
        var (e, w1, b1, w2, _) = Split(parameters, pv, d, h, width);
        var pre = new double[pv * h];
        var hidden = new double[pv * h];
        LinearReference.Forward(pre, e, w1, b1, pv, d, h);
        TanhReference.Forward(hidden, pre, pre.Length);
        var (dE, dW1, dB1, dW2, dB2) = (new double[pv * d], new double[h * d], new double[h], new double[width * h], new double[width]);
        var dHidden = new double[pv * h];
        var dPre = new double[pv * h];
        LinearReference.BackwardWeights(dW2, dB2, dOutput, hidden, pv, h, width);
        LinearReference.Backward(dHidden, dOutput, w2, pv, h, width);
        TanhReference.Backward(dPre, dHidden, hidden, dPre.Length);
        LinearReference.BackwardWeights(dW1, dB1, dPre, e, pv, d, h);
        LinearReference.Backward(dE, dPre, w1, pv, d, h);
        return [.. dE, .. dW1, .. dB1, .. dW2, .. dB2];
    }
}
